// Blob surgery for the estargz tests: swap the TOC of a blob, or its footer, to make legacy stargz
// and every kind of broken input. Footers are written here from ESTARGZ.md §2 byte tables, not
// with src/estargz/footer.ts, so the reader is checked against an independent encoding.
import { gunzipSync, gzipSync } from 'node:zlib';
import { buildTar } from './estargz-tar.js';

function gzipHeaderWithExtra(extra: Buffer): Buffer {
  const head = Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, extra.length & 0xff, extra.length >> 8]);
  return Buffer.concat([head, extra, Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff]), Buffer.alloc(8)]);
}

export function estargzFooterBytes(tocOffset: number): Buffer {
  const extra = Buffer.concat([Buffer.from('SG'), Buffer.from([22, 0]), Buffer.from(tocOffset.toString(16).padStart(16, '0')), Buffer.from('STARGZ')]);
  return gzipHeaderWithExtra(extra);
}

export function legacyFooterBytes(tocOffset: number): Buffer {
  return gzipHeaderWithExtra(Buffer.concat([Buffer.from(tocOffset.toString(16).padStart(16, '0')), Buffer.from('STARGZ')]));
}

export function tocMember(json: Buffer | string, name = 'stargz.index.json'): Buffer {
  return gzipSync(buildTar([{ type: 'file', name, content: Buffer.from(json), mode: 0 }]));
}

/** The TOC JSON of an eStargz blob made by our writer (for editing). */
export function tocOf(blob: Buffer, tocOffset: number): { version: number; entries: Record<string, unknown>[] } {
  const tar = gunzipSync(blob.subarray(tocOffset, blob.length - 51));
  const size = parseInt(tar.subarray(124, 136).toString('latin1').replace(/\0.*$/, ''), 8);
  return JSON.parse(tar.subarray(512, 512 + size).toString('utf8')) as { version: number; entries: Record<string, unknown>[] };
}

/** The data part of `blob` followed by a new TOC member and footer. */
export function withToc(blob: Buffer, tocOffset: number, json: Buffer | string, footer: 'estargz' | 'legacy' = 'estargz'): Buffer {
  const member = tocMember(json);
  return Buffer.concat([blob.subarray(0, tocOffset), member, footer === 'estargz' ? estargzFooterBytes(tocOffset) : legacyFooterBytes(tocOffset)]);
}

/** A blob whose footer (eStargz or legacy) points at `tocOffset`, with `body` before it. */
export function withFooter(body: Buffer, tocOffset: number, footer: 'estargz' | 'legacy' = 'estargz'): Buffer {
  return Buffer.concat([body, footer === 'estargz' ? estargzFooterBytes(tocOffset) : legacyFooterBytes(tocOffset)]);
}
