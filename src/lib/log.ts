// The one logger interface the core, the stores and the upstreams log through. The server's pino
// logger fits it; tests pass a recording one.
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}
