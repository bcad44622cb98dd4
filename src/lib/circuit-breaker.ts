// A circuit breaker over failures in a row. Closed while fewer than `failuresToOpen` requests
// failed in a row; then open until `coolDownMs` after the latest failure; then half-open: the
// next request may go as a probe, and its outcome closes the circuit (a success) or opens it
// again (a failure: the count is still over the threshold). What the circuit is used for stays
// with its owner: an upstream only reports itself unhealthy while open, the S3 bucket is skipped.

export interface CircuitBreakerOptions {
  /** failures in a row that open the circuit */
  failuresToOpen: number;
  /** an open circuit stays open this long after its latest failure */
  coolDownMs: number;
  /** how long a probe may stay out before another one is let through (default coolDownMs) */
  probeMs?: number | undefined;
  /** ms clock, injectable for tests */
  now?: (() => number) | undefined;
}

export type CircuitState = 'closed' | 'open' | 'half-open';

export class CircuitBreaker {
  readonly #o: CircuitBreakerOptions;
  readonly #now: () => number;
  #inARow = 0;
  /** while the count is over the threshold: open until then (ms on the clock) */
  #openUntil = 0;

  constructor(o: CircuitBreakerOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  /** Requests that failed since the last success. */
  get failuresInARow(): number {
    return this.#inARow;
  }

  state(): CircuitState {
    if (this.#inARow < this.#o.failuresToOpen) return 'closed';
    return this.#now() < this.#openUntil ? 'open' : 'half-open';
  }

  /**
   * May a request go now? Closed: yes. Half-open: yes, as the one probe; the circuit is open
   * again for the others until the probe reports (or probeMs passes: a probe that never reports
   * is given up on). Open: no.
   */
  probe(): boolean {
    const state = this.state();
    if (state === 'half-open') this.#openUntil = this.#now() + (this.#o.probeMs ?? this.#o.coolDownMs);
    return state !== 'open';
  }

  succeeded(): void {
    this.#inARow = 0;
    this.#openUntil = 0;
  }

  failed(): void {
    this.#inARow++;
    if (this.#inARow >= this.#o.failuresToOpen) this.#openUntil = this.#now() + this.#o.coolDownMs;
  }
}
