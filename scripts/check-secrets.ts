// Run after tap by `npm test`: searches every proxy log the test helpers wrote
// (PULLTHROUGH_TEST_LOG_DIR, default .tap/proxy-logs) and tap's saved output of every test file
// (.tap/test-results) for each secret of test/helpers/secrets.ts, raw and base64'd. Each hit is
// printed as the file and the secret's name, never the secret. Exits 1 on any hit, and also when
// there was no proxy log to search, so that it cannot pass by checking nothing.
//
//   node --import tsx scripts/check-secrets.ts [LOG_DIR [TAP_DIR]]
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { secretsIn, SECRETS } from '../test/helpers/secrets.js';

const logDir = process.argv[2] ?? process.env.PULLTHROUGH_TEST_LOG_DIR ?? '.tap/proxy-logs';
const tapDir = process.argv[3] ?? '.tap/test-results';

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

const logs = await filesUnder(logDir);
const outputs = await filesUnder(tapDir);
let hits = 0;
for (const file of [...logs, ...outputs]) {
  for (const name of secretsIn(await readFile(file))) {
    hits++;
    console.log(`check-secrets: secret ${name} found in ${file}`);
  }
}
const searched = `${Object.keys(SECRETS).length} secrets searched for in ${logs.length} proxy logs (${logDir}) and ${outputs.length} tap outputs (${tapDir})`;
if (logs.length === 0) {
  console.log(`check-secrets: FAIL: no proxy logs in ${logDir}; run the tests with PULLTHROUGH_TEST_LOG_DIR set (npm test does)`);
  process.exitCode = 1;
} else if (hits > 0) {
  console.log(`check-secrets: FAIL: ${hits} leaks; ${searched}`);
  process.exitCode = 1;
} else {
  console.log(`check-secrets: ok: ${searched}`);
}
