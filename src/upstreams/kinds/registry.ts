// Any other registry speaking the distribution API: anonymous, or static credentials (a
// password alone goes with the username "token").
import { basicOrAnonymous, genericKind, type Kind } from './kind.js';

export const registry: Kind = {
  ...genericKind,
  type: 'registry',
  // owns no host or name itself: it is the kind of every upstream no other kind claims
  ownsHost: () => false,
  adapter: (u) => ({ credentials: basicOrAnonymous(u, 'token'), deniedHint: undefined }),
};
