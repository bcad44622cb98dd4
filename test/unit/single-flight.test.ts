// SingleFlight: callers of one key share one operation; a caller leaving (its signal aborting)
// fails only its own wait; the operation gets no caller's signal; the entry goes when the
// operation settles, or, with holdUntil, when the promise it names settles; errors are shared.
import t from 'tap';
import { SingleFlight } from '../../src/lib/single-flight.js';

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets pending promise callbacks run. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('concurrent callers of one key share one operation; other keys get their own', async (t) => {
  const sf = new SingleFlight<string>();
  let calls = 0;
  const work = deferred<string>();
  const a = sf.run('k', () => (calls++, work.promise));
  const b = sf.run('k', () => (calls++, Promise.resolve('second')));
  const other = sf.run('j', () => (calls++, Promise.resolve('other')));
  t.equal(calls, 2, 'one operation for k, one for j');
  work.resolve('first');
  t.same(await Promise.all([a, b, other]), ['first', 'first', 'other']);
});

t.test('the entry is removed once the operation settles: the next caller starts afresh', async (t) => {
  const sf = new SingleFlight<number>();
  let calls = 0;
  t.equal(await sf.run('k', async () => ++calls), 1);
  t.equal(sf.peek('k'), undefined, 'gone by the time the caller resumes');
  t.equal(await sf.run('k', async () => ++calls), 2);
  await sf.run('k', async () => { throw new Error('no'); }).catch(() => undefined);
  t.equal(sf.peek('k'), undefined, 'a failure is forgotten too');
  t.equal(await sf.run('k', async () => ++calls), 3);
});

t.test('peek shows the operation in flight without starting one', async (t) => {
  const sf = new SingleFlight<string>();
  t.equal(sf.peek('k'), undefined);
  const work = deferred<string>();
  const p = sf.run('k', () => work.promise);
  t.equal(sf.peek('k'), p, 'the shared promise');
  work.resolve('v');
  t.equal(await sf.peek('k'), 'v');
  await p;
  t.equal(sf.peek('k'), undefined);
});

t.test('errors are shared by every waiter', async (t) => {
  const sf = new SingleFlight<string>();
  const work = deferred<string>();
  const boom = new Error('boom');
  const a = sf.run('k', () => work.promise);
  const b = sf.run('k', () => Promise.resolve('unused'));
  work.reject(boom);
  await t.rejects(a, boom);
  await t.rejects(b, boom);
});

t.test('a synchronous throw is a shared rejection, not a throw from run', async (t) => {
  const sf = new SingleFlight<string>();
  const boom = new Error('sync');
  let p: Promise<string> | undefined;
  t.doesNotThrow(() => {
    p = sf.run('k', () => { throw boom; });
  });
  await t.rejects(p!, boom);
  t.equal(sf.peek('k'), undefined);
});

t.test('a waiter that leaves does not fail the others, nor stop the operation', async (t) => {
  const sf = new SingleFlight<string>();
  const work = deferred<string>();
  const leaving = new AbortController();
  let ran = 0;
  const first = sf.run('k', () => (ran++, work.promise), { signal: leaving.signal });
  const staying = sf.run('k', () => Promise.resolve('unused'), { signal: new AbortController().signal });
  const plain = sf.run('k', () => Promise.resolve('unused'));
  const reason = new Error('client went away');
  leaving.abort(reason);
  await t.rejects(first, reason, 'the leaving waiter gets its own signal\'s reason');
  t.ok(sf.peek('k'), 'the operation is still in flight');
  const late = sf.run('k', () => Promise.resolve('unused'));
  work.resolve('done');
  t.same(await Promise.all([staying, plain, late]), ['done', 'done', 'done']);
  t.equal(ran, 1);
});

t.test('a caller whose signal has already aborted is refused at once', async (t) => {
  const sf = new SingleFlight<string>();
  const work = deferred<string>();
  const other = sf.run('k', () => work.promise);
  const gone = AbortSignal.abort(new Error('gone'));
  await t.rejects(sf.run('k', () => Promise.resolve('unused'), { signal: gone }), { message: 'gone' });
  work.resolve('v');
  t.equal(await other, 'v');
});

t.test('the operation gets no caller\'s signal', async (t) => {
  const sf = new SingleFlight<string>();
  let args: unknown[] | undefined;
  const leaving = new AbortController();
  const work = deferred<string>();
  const p = sf.run('k', (...a: unknown[]) => {
    args = a;
    return work.promise;
  }, { signal: leaving.signal });
  t.same(args, [], 'called with nothing');
  leaving.abort();
  await t.rejects(p);
  work.resolve('v');
  t.equal(await sf.run('k', () => Promise.resolve('unused')), 'v', 'a later caller still joins it');
});

t.test('holdUntil keeps the entry after the value is out, until its promise settles', async (t) => {
  for (const outcome of ['resolves', 'rejects'] as const) {
    const sf = new SingleFlight<{ done: Promise<void> }>();
    const done = deferred<void>();
    let calls = 0;
    const value = { done: done.promise };
    const first = await sf.run('k', async () => (calls++, value), { holdUntil: (v) => v.done });
    t.equal(first, value);
    await settle();
    t.equal(await sf.run('k', async () => (calls++, { done: Promise.resolve() })), value, `held while done is pending (${outcome})`);
    t.equal(calls, 1);
    if (outcome === 'resolves') done.resolve();
    else done.reject(new Error('fill failed'));
    await settle();
    t.equal(sf.peek('k'), undefined, `released once done ${outcome}`);
    await sf.run('k', async () => (calls++, { done: Promise.resolve() }));
    t.equal(calls, 2, 'the next caller starts afresh');
  }
});

t.test('holdUntil does not hold a failed operation, and only the starter\'s holdUntil counts', async (t) => {
  const sf = new SingleFlight<string>();
  await t.rejects(sf.run('k', () => Promise.reject(new Error('no')), { holdUntil: () => new Promise(() => undefined) }));
  t.equal(sf.peek('k'), undefined, 'a rejection is forgotten at once');
  const work = deferred<string>();
  const starter = sf.run('k', () => work.promise);
  let asked = false;
  const joiner = sf.run('k', () => Promise.resolve('unused'), { holdUntil: () => { asked = true; return new Promise(() => undefined); } });
  work.resolve('v');
  t.same(await Promise.all([starter, joiner]), ['v', 'v']);
  t.notOk(asked, 'a joiner\'s holdUntil is not called');
  t.equal(sf.peek('k'), undefined);
});

t.test('a holdUntil that throws releases the entry', async (t) => {
  const sf = new SingleFlight<string>();
  t.equal(await sf.run('k', async () => 'v', { holdUntil: () => { throw new Error('bad hold'); } }), 'v');
  await settle();
  t.equal(sf.peek('k'), undefined);
});
