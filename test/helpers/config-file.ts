// Config documents as users write them: each YAML text in a file of its own, loaded by the real
// loader (flags none, the environment given), for the tests of one part of the config.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { makeTempDir, removeDir } from './util.js';

/** A `load(yaml, env)` over a temp directory removed at `t`'s teardown. */
export async function configLoader(t: { teardown(fn: () => unknown): void }, prefix: string) {
  const dir = await makeTempDir(prefix);
  t.teardown(() => removeDir(dir));
  let n = 0;
  return async (yaml: string, env: NodeJS.ProcessEnv = {}) => {
    const path = join(dir, `c${n++}.yml`);
    await writeFile(path, yaml);
    return loadConfig({ config: path }, env);
  };
}
