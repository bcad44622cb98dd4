// CircuitBreaker on a fake clock: closed until failures in a row reach the threshold, open for the
// cool-down after the latest failure, then half-open with one probe at a time; a success closes.
import t from 'tap';
import { CircuitBreaker } from '../../src/lib/circuit-breaker.js';

function breaker(o: { failuresToOpen?: number; coolDownMs?: number; probeMs?: number } = {}) {
  const clock = { now: 1_000_000 };
  const b = new CircuitBreaker({ failuresToOpen: o.failuresToOpen ?? 3, coolDownMs: o.coolDownMs ?? 10_000, probeMs: o.probeMs, now: () => clock.now });
  return { b, clock };
}

t.test('closed until failures in a row reach the threshold; a success starts the count again', async (t) => {
  const { b } = breaker();
  t.equal(b.state(), 'closed');
  b.failed();
  b.failed();
  t.equal(b.state(), 'closed', 'two failures: still closed');
  t.equal(b.failuresInARow, 2);
  b.succeeded();
  t.equal(b.failuresInARow, 0);
  b.failed();
  b.failed();
  t.equal(b.state(), 'closed', 'the success reset the count');
  b.failed();
  t.equal(b.state(), 'open', 'three in a row: open');
  t.equal(b.probe(), false, 'nothing goes while open');
});

t.test('open for the cool-down after the latest failure, then half-open', async (t) => {
  const { b, clock } = breaker();
  for (let i = 0; i < 3; i++) b.failed();
  clock.now += 9_999;
  t.equal(b.state(), 'open', 'just before the cool-down ends');
  clock.now += 1;
  t.equal(b.state(), 'half-open', 'once it has passed');
  t.equal(b.state(), 'half-open', 'asking the state changes nothing');
  b.failed();
  t.equal(b.state(), 'open', 'one more failure opens it again at once');
  clock.now += 5_000;
  b.failed();
  clock.now += 9_999;
  t.equal(b.state(), 'open', 'the cool-down counts from the latest failure');
  clock.now += 1;
  t.equal(b.state(), 'half-open');
  b.succeeded();
  t.equal(b.state(), 'closed', 'a success closes it');
  b.failed();
  t.equal(b.state(), 'closed', 'and the count starts from nothing');
});

t.test('half-open lets one probe through; the others wait until it reports or probeMs passes', async (t) => {
  const { b, clock } = breaker({ failuresToOpen: 1, coolDownMs: 5_000, probeMs: 30_000 });
  t.equal(b.probe(), true, 'closed: every request goes');
  t.equal(b.probe(), true);
  b.failed();
  t.equal(b.probe(), false, 'open');
  clock.now += 5_000;
  t.equal(b.probe(), true, 'the probe');
  t.equal(b.state(), 'open', 'open again for the others while it is out');
  t.equal(b.probe(), false);
  clock.now += 29_999;
  t.equal(b.probe(), false, 'up to probeMs');
  clock.now += 1;
  t.equal(b.probe(), true, 'a probe that never reported is given up on: another one goes');
  b.failed();
  t.equal(b.probe(), false, 'a failed probe: open for the cool-down');
  clock.now += 5_000;
  t.equal(b.probe(), true);
  b.succeeded();
  t.equal(b.state(), 'closed', 'a probe that succeeds closes the circuit');
  t.equal(b.probe(), true);
  t.equal(b.probe(), true, 'and every request goes again');
});

t.test('without probeMs a probe is given up on after the cool-down', async (t) => {
  const { b, clock } = breaker({ failuresToOpen: 1, coolDownMs: 1_000 });
  b.failed();
  clock.now += 1_000;
  t.equal(b.probe(), true);
  clock.now += 999;
  t.equal(b.probe(), false);
  clock.now += 1;
  t.equal(b.probe(), true);
});

t.test('the clock defaults to Date.now', async (t) => {
  const b = new CircuitBreaker({ failuresToOpen: 1, coolDownMs: 60_000 });
  b.failed();
  t.equal(b.state(), 'open');
  const soon = new CircuitBreaker({ failuresToOpen: 1, coolDownMs: 0 });
  soon.failed();
  t.equal(soon.state(), 'half-open', 'a cool-down of 0 is over at once');
});
