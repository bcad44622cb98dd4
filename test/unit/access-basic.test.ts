import t from 'tap';
import { parseBasic } from '../../src/access/basic.js';

const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;

t.test('Basic credentials as clients send them', async (t) => {
  t.same(parseBasic(basic('alice:s3cret')), { username: 'alice', password: 's3cret' });
  t.same(parseBasic(basic('ci:pa:ss:word')), { username: 'ci', password: 'pa:ss:word' }, 'a password may hold colons');
  t.same(parseBasic(basic('bob:')), { username: 'bob', password: '' }, 'an empty password is a password');
  t.same(parseBasic(`basic  ${Buffer.from('u:p').toString('base64')}`), { username: 'u', password: 'p' }, 'the scheme is case-insensitive');
  t.same(parseBasic(basic('zoë:pässword')), { username: 'zoë', password: 'pässword' }, 'UTF-8');
});

t.test('anything else is no credential', async (t) => {
  for (const h of [undefined, '', 'Bearer abc', 'Basic', 'Basic !!!', basic(':nouser'), basic('nocolon'), `Basic ${'A'.repeat(9000)}`]) {
    t.equal(parseBasic(h), undefined, JSON.stringify(h?.slice(0, 40)));
  }
});
