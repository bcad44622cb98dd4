// One operation in flight per key: concurrent callers share the first caller's promise. The
// shared operation belongs to no caller (its function gets no signal): one caller giving up (its
// signal aborting) stops only its own wait, never the operation the others are waiting on.
// Outcomes are shared as they are, failures included; a failed operation is forgotten at once,
// so the next caller starts afresh.

export interface FlightOptions<T> {
  /** this caller's signal: when it aborts, this caller stops waiting (with its reason); the work goes on */
  signal?: AbortSignal | undefined;
  /**
   * Keeps the entry after the operation resolves, until the promise returned here settles (for
   * work that goes on after its value is handed out, e.g. a fill that streams on). Only the
   * caller that starts the operation chooses; a joining caller's holdUntil is not used.
   */
  holdUntil?: ((value: T) => PromiseLike<unknown>) | undefined;
}

export class SingleFlight<T> {
  readonly #inflight = new Map<string, Promise<T>>();

  /** Joins the operation in flight for `key`, or starts `fn` as that operation. */
  run(key: string, fn: () => Promise<T>, o: FlightOptions<T> = {}): Promise<T> {
    let shared = this.#inflight.get(key);
    if (!shared) {
      const started = attempt(fn);
      shared = started;
      this.#inflight.set(key, started);
      const forget = (): void => {
        if (this.#inflight.get(key) === started) this.#inflight.delete(key);
      };
      // attached before any caller's handler: a caller that resumes finds the entry gone
      started.then((value) => {
        const hold = o.holdUntil && attempt(() => Promise.resolve(o.holdUntil!(value)));
        if (hold) hold.then(forget, forget);
        else forget();
      }, forget);
    }
    return o.signal ? abandonable(shared, o.signal) : shared;
  }

  /** The operation in flight (or held) for `key`, without starting one. */
  peek(key: string): Promise<T> | undefined {
    return this.#inflight.get(key);
  }
}

/** fn's promise; a synchronous throw becomes a rejection. */
function attempt<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (e) {
    return Promise.reject(e);
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
