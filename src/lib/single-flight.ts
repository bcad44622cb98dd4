// One operation in flight per key: concurrent callers share the first caller's promise. The
// shared operation belongs to no caller: one caller giving up (its signal aborting) stops only
// its own wait, never the operation the others are waiting on.

export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  run(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    let shared = this.inflight.get(key);
    if (!shared) {
      shared = fn().finally(() => this.inflight.delete(key));
      this.inflight.set(key, shared);
    }
    return signal ? abandonable(shared, signal) : shared;
  }
}

/** The promise's outcome, or the signal's reason if it aborts first. */
function abandonable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
