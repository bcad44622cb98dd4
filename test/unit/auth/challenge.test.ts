import t from 'tap';
import { type Challenge, challengeScopes, parseChallenges, pickChallenge } from '../../../src/upstreams/auth/challenge.js';

const cases: [string, string | string[] | undefined, Challenge[]][] = [
  ['undefined', undefined, []],
  ['empty', '', []],
  [
    'docker hub bearer',
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    [
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
      },
    ],
  ],
  [
    'folded by undici into one line',
    'Basic realm="x", Bearer realm="y",service="z",scope="repository:a/b:pull"',
    [
      { scheme: 'basic', params: { realm: 'x' } },
      { scheme: 'bearer', params: { realm: 'y', service: 'z', scope: 'repository:a/b:pull' } },
    ],
  ],
  [
    'several header lines',
    ['Basic realm="x"', 'Bearer realm="y", service="z"'],
    [
      { scheme: 'basic', params: { realm: 'x' } },
      { scheme: 'bearer', params: { realm: 'y', service: 'z' } },
    ],
  ],
  [
    'case-insensitive scheme and keys, token values, odd spacing',
    '  BEARER   Realm = https://h/token ,SERVICE=svc ,  , Scope="a b"  ',
    [{ scheme: 'bearer', params: { realm: 'https://h/token', service: 'svc', scope: 'a b' } }],
  ],
  [
    'backslash escapes in quoted strings',
    'Bearer realm="a\\"b\\\\c\\d", error="insufficient_scope"',
    [{ scheme: 'bearer', params: { realm: 'a"b\\cd', error: 'insufficient_scope' } }],
  ],
  [
    'quoted comma does not split',
    'Bearer realm="https://h/t",scope="repository:x:pull,push"',
    [{ scheme: 'bearer', params: { realm: 'https://h/t', scope: 'repository:x:pull,push' } }],
  ],
  [
    "ECR's Basic challenge",
    'Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com"',
    [
      {
        scheme: 'basic',
        params: { realm: 'https://123456789012.dkr.ecr.us-east-1.amazonaws.com/', service: 'ecr.amazonaws.com' },
      },
    ],
  ],
  [
    "GAR's without service",
    'Bearer realm="https://us-docker.pkg.dev/v2/token"',
    [{ scheme: 'bearer', params: { realm: 'https://us-docker.pkg.dev/v2/token' } }],
  ],
  ['scheme only', 'Negotiate', [{ scheme: 'negotiate', params: {} }]],
  [
    'scheme without params then another',
    'Negotiate, Basic realm="r"',
    [
      { scheme: 'negotiate', params: {} },
      { scheme: 'basic', params: { realm: 'r' } },
    ],
  ],
  ['params before any scheme are dropped', 'realm="x", Basic realm="y"', [{ scheme: 'basic', params: { realm: 'y' } }]],
  ['unterminated quote is dropped', 'Bearer service="s", realm="oops', [{ scheme: 'bearer', params: { service: 's' } }]],
  ['garbage characters', '=== ,,, "" @@', []],
  ['garbage then challenge', '@@ ; Basic realm="r"', [{ scheme: 'basic', params: { realm: 'r' } }]],
  ['empty value', 'Bearer realm=,service=""', [{ scheme: 'bearer', params: { realm: '', service: '' } }]],
];

t.test('parseChallenges table', async (t) => {
  for (const [name, input, want] of cases) t.same(parseChallenges(input), want, name);
});

t.test('never throws on junk', async (t) => {
  const junk = ['"', '\\', '=', 'a=', 'a="\\', ',', ' ', 'Bearer ="x"', '\u0000\u00ff', 'Basic realm="\u00e9"'];
  for (const j of junk) t.doesNotThrow(() => parseChallenges(j), JSON.stringify(j));
  t.same(parseChallenges('Basic realm="\u00e9"'), [{ scheme: 'basic', params: { realm: '\u00e9' } }]);
});

t.test('pickChallenge', async (t) => {
  t.equal(pickChallenge([]), undefined);
  t.equal(pickChallenge(parseChallenges('Negotiate, Digest realm="x"')), undefined, 'unknown schemes ignored');
  t.same(pickChallenge(parseChallenges('Basic realm="x", Bearer realm="y"')), { scheme: 'bearer', params: { realm: 'y' } });
  t.same(pickChallenge(parseChallenges('Bearer service="no-realm", Basic realm="x"')), {
    scheme: 'basic',
    params: { realm: 'x' },
  }, 'bearer without realm is unusable');
  t.same(pickChallenge(parseChallenges('Basic realm="x"')), { scheme: 'basic', params: { realm: 'x' } });
});

t.test('challengeScopes', async (t) => {
  t.same(challengeScopes({ scheme: 'bearer', params: {} }), []);
  t.same(challengeScopes({ scheme: 'bearer', params: { scope: ' repository:a:pull  repository:b:pull ' } }), [
    'repository:a:pull',
    'repository:b:pull',
  ]);
});
