// Re-hashes every cached blob and removes the ones whose content no longer matches their digest
// (disk corruption, a file edited by hand). Fills are verified before they become visible; this
// checks what happened to them afterwards.
import { createHash } from 'node:crypto';
import { tryParseDigest } from '../oci/digest.js';
import type { BlobStore } from './blob-store.js';

export interface VerifyReport {
  checked: number;
  bytes: number;
  bad: { digest: string; got: string }[];
  /** listed, but gone (or unreadable) by the time they were opened */
  unreadable: number;
}

export async function verifyStore(store: BlobStore, onBad?: (digest: string, got: string) => void): Promise<VerifyReport> {
  const report: VerifyReport = { checked: 0, bytes: 0, bad: [], unreadable: 0 };
  for await (const key of store.list()) {
    const digest = tryParseDigest(key);
    if (!digest) continue;
    const reader = await store.open(digest);
    if (!reader) {
      report.unreadable++; // evicted meanwhile, or a store that could not be read
      continue;
    }
    const hash = createHash(digest.algorithm);
    for await (const chunk of reader.stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      report.bytes += chunk.length;
    }
    report.checked++;
    const got = `${digest.algorithm}:${hash.digest('hex')}`;
    if (got !== digest.value) {
      await store.delete(digest);
      report.bad.push({ digest: digest.value, got });
      onBad?.(digest.value, got);
    }
  }
  return report;
}
