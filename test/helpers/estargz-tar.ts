// In-code tar builder for the estargz tests: every entry type a layer has (files, dirs, symlinks,
// hardlinks, fifos, char devices), owners, xattrs and long names (through PAX records).
// Kept independent of src/tar so the tests do not check our tar code with itself.
import { randomBytes } from 'node:crypto';

export type EntrySpec =
  | { type: 'file'; name: string; content?: Buffer | string; mode?: number; uid?: number; gid?: number; uname?: string; gname?: string; xattrs?: Record<string, string>; mtime?: number }
  | { type: 'dir'; name: string; mode?: number; mtime?: number }
  | { type: 'symlink' | 'hardlink'; name: string; target: string }
  | { type: 'fifo'; name: string }
  | { type: 'char'; name: string; major: number; minor: number };

const FLAG = { file: '0', hardlink: '1', symlink: '2', char: '3', dir: '5', fifo: '6' } as const;

function field(b: Buffer, at: number, len: number, s: string): void {
  b.write(s, at, len, 'utf8');
}

function octal(b: Buffer, at: number, len: number, n: number): void {
  field(b, at, len, `${n.toString(8).padStart(len - 1, '0')}\0`);
}

function block(name: string, flag: string, size: number, o: { mode?: number; uid?: number; gid?: number; uname?: string; gname?: string; link?: string; mtime?: number; major?: number; minor?: number }): Buffer {
  const b = Buffer.alloc(512);
  field(b, 0, 100, name);
  octal(b, 100, 8, o.mode ?? 0o644);
  octal(b, 108, 8, o.uid ?? 0);
  octal(b, 116, 8, o.gid ?? 0);
  octal(b, 124, 12, size);
  octal(b, 136, 12, o.mtime ?? 1704067200);
  b.fill(' ', 148, 156);
  field(b, 156, 1, flag);
  field(b, 157, 100, o.link ?? '');
  field(b, 257, 8, 'ustar\u000000');
  field(b, 265, 32, o.uname ?? '');
  field(b, 297, 32, o.gname ?? '');
  octal(b, 329, 8, o.major ?? 0);
  octal(b, 337, 8, o.minor ?? 0);
  let sum = 0;
  for (const v of b) sum += v;
  field(b, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return b;
}

function pad(n: number): Buffer {
  return Buffer.alloc((512 - (n % 512)) % 512);
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

/** A complete tar archive (with end-of-archive marker) of the given entries. */
export function buildTar(specs: readonly EntrySpec[]): Buffer {
  const parts: Buffer[] = [];
  for (const s of specs) {
    const content = s.type === 'file' ? Buffer.from(s.content ?? '') : Buffer.alloc(0);
    const records: string[] = [];
    let name = s.type === 'dir' && !s.name.endsWith('/') ? `${s.name}/` : s.name;
    if (Buffer.byteLength(name) > 99) {
      records.push(paxRecord('path', name));
      name = name.slice(0, 99);
    }
    if (s.type === 'file') for (const [k, v] of Object.entries(s.xattrs ?? {})) records.push(paxRecord(`SCHILY.xattr.${k}`, v));
    if (records.length > 0) {
      const data = Buffer.from(records.join(''));
      parts.push(block('PaxHeaders/x', 'x', data.length, {}), data, pad(data.length));
    }
    const opts = {
      mode: s.type === 'file' || s.type === 'dir' ? s.mode : s.type === 'symlink' ? 0o777 : undefined,
      uid: s.type === 'file' ? s.uid : undefined,
      gid: s.type === 'file' ? s.gid : undefined,
      uname: s.type === 'file' ? s.uname : undefined,
      gname: s.type === 'file' ? s.gname : undefined,
      link: s.type === 'symlink' || s.type === 'hardlink' ? s.target : undefined,
      major: s.type === 'char' ? s.major : undefined,
      minor: s.type === 'char' ? s.minor : undefined,
    };
    parts.push(block(name, FLAG[s.type], content.length, opts), content, pad(content.length));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** A layer covering every case the converter must keep: many small files, a multi-chunk file, links, dirs, empty files, a whiteout. */
export function sampleLayer(opts: { smallFiles?: number; bigFileSize?: number } = {}): { specs: EntrySpec[]; tar: Buffer } {
  const specs: EntrySpec[] = [
    { type: 'dir', name: 'app', mode: 0o755 },
    { type: 'dir', name: 'app/small', mode: 0o750 },
  ];
  for (let i = 0; i < (opts.smallFiles ?? 200); i++) {
    specs.push({ type: 'file', name: `app/small/f${i}.txt`, content: `file ${i}\n`.repeat(i % 7), mode: 0o644, uid: 1000 + (i % 3), gid: 1000, uname: `user${i % 3}`, gname: 'staff' });
  }
  specs.push(
    { type: 'file', name: 'app/big.bin', content: randomBytes(opts.bigFileSize ?? 5 * 1024 * 1024 + 12345), mode: 0o755 },
    { type: 'file', name: 'app/empty', content: '' },
    { type: 'symlink', name: 'app/link-to-big', target: 'big.bin' },
    { type: 'symlink', name: 'app/abs-link', target: '/etc/passwd' },
    { type: 'hardlink', name: 'app/big-hard', target: 'app/big.bin' },
    { type: 'fifo', name: 'app/fifo' },
    { type: 'dir', name: 'etc' },
    { type: 'file', name: 'etc/.wh.removed.conf' },
    { type: 'file', name: 'etc/xattr.conf', content: 'x=1\n', xattrs: { 'user.note': 'hello' } },
    { type: 'dir', name: 'var/lib/opaque' },
    { type: 'file', name: 'var/lib/opaque/.wh..wh..opq' },
    { type: 'file', name: `deep/${'d'.repeat(60)}/${'e'.repeat(60)}/long-name-file.txt`, content: 'long name via PAX\n' },
  );
  return { specs, tar: buildTar(specs) };
}
