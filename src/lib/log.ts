// The one logger interface the core, the stores and the upstreams log through. The server's pino
// logger fits it; tests pass a recording one.
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

type Level = keyof Logger;

/**
 * A logger for what runs before the real one exists (the stores and the htpasswd file open before
 * the server whose logger they write to): lines are held, in order, until `attach` hands them on;
 * after it, every line goes straight through. Only startup writes before `attach`, so what is held
 * stays small.
 */
export class HeldLogger implements Logger {
  private target: Logger | undefined;
  private held: [Level, object, string | undefined][] = [];

  info(obj: object, msg?: string): void {
    this.write('info', obj, msg);
  }

  warn(obj: object, msg?: string): void {
    this.write('warn', obj, msg);
  }

  attach(target: Logger): void {
    this.target = target;
    for (const [level, obj, msg] of this.held) target[level](obj, msg);
    this.held = [];
  }

  private write(level: Level, obj: object, msg: string | undefined): void {
    if (this.target) this.target[level](obj, msg);
    else this.held.push([level, obj, msg]);
  }
}
