// Any other registry speaking the distribution API: anonymous, or static credentials (a
// password alone goes with the username "token").
import { basicOrAnonymous, genericKind, type Kind } from './kind.js';

export const registry: Kind = {
  ...genericKind,
  type: 'registry',
  // the kind of every host no other kind owns
  ownsHost: () => true,
  adapter: (u) => ({ credentials: basicOrAnonymous(u, 'token'), deniedHint: undefined }),
};
