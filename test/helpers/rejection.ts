// The registry error a promise rejects with; anything else, or no rejection, fails the test.
import { isRegistryError, type RegistryError } from '../../src/oci/errors.js';

export async function rejection(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    if (isRegistryError(e)) return e;
    throw e;
  }
  throw new Error('expected a rejection');
}
