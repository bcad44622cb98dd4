// One operation in flight per key: concurrent callers share the first caller's promise.

export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  run(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.inflight.get(key);
    if (running) return running;
    const started = fn().finally(() => this.inflight.delete(key));
    this.inflight.set(key, started);
    return started;
  }

  get(key: string): Promise<T> | undefined {
    return this.inflight.get(key);
  }
}
