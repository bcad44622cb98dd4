// The source layer of the gzip vs eStargz benchmark, built in code from a seed: a root filesystem
// with many small files and some large ones, its content a mix of incompressible bytes (AES-CTR
// keystream), text (words out of a pseudo-random vocabulary) and "binary" (4 KiB blocks of either,
// plus sparse tables), so gzip has real work and a real effect. Same seed and scale, same bytes.
//
//   files(seed, scale)   the entry list, in tar order (directories before what they hold)
//   writeTar(...)        streams it as a ustar archive
//
// Scale 1 gives about 1.45 GiB of tar that gzips to about 1 GiB; smaller scales keep the mix.
import { createCipheriv, createHash, type Cipher } from 'node:crypto';

export type Kind = 'text' | 'bin' | 'rand';

export interface FileSpec {
  path: string;
  type: 'dir' | 'file';
  size: number;
  kind: Kind;
}

/** splitmix32-style PRNG: deterministic decisions (sizes, kinds, offsets). */
export class Rng {
  private s: number;
  constructor(seed: string) {
    this.s = createHash('sha256').update(seed).digest().readUInt32LE(0) || 1;
  }
  next(): number {
    let z = (this.s = (this.s + 0x9e3779b9) | 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** log-uniform integer in [lo, hi] */
  logInt(lo: number, hi: number): number {
    return Math.round(Math.exp(Math.log(lo) + this.next() * (Math.log(hi) - Math.log(lo))));
  }
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** The file tree. `scale` multiplies file counts and large-file sizes (1 = the full layer). */
export function files(seed: string, scale = 1): FileSpec[] {
  const rng = new Rng(`${seed}/tree`);
  const n = (x: number): number => Math.max(1, Math.round(x * scale));
  const out: FileSpec[] = [];
  const dirs = new Set<string>();
  const dir = (p: string): void => {
    const parts = p.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        out.push({ path: `${d}/`, type: 'dir', size: 0, kind: 'text' });
      }
    }
  };
  const file = (p: string, size: number, kind: Kind): void => {
    dir(p.slice(0, p.lastIndexOf('/')));
    out.push({ path: p, type: 'file', size, kind });
  };
  // etc: small configuration files
  for (let i = 0; i < n(200); i++) file(`etc/conf.d/service-${String(i).padStart(3, '0')}.conf`, rng.logInt(200, 8 * KiB), 'text');
  // the application: what it needs to start is the prioritized (prefetch) set, see PRIORITIZED
  file('opt/app/bin/server', 3 * MiB, 'bin');
  file('opt/app/lib/libapp.so', 2 * MiB, 'bin');
  for (let i = 0; i < 20; i++) file(`opt/app/config/part-${String(i).padStart(2, '0')}.yaml`, rng.logInt(500, 16 * KiB), 'text');
  file('opt/app/README.md', 6 * KiB, 'text');
  // large, incompressible: model weights
  file('opt/models/weights-0.bin', Math.round(320 * MiB * scale), 'rand');
  file('opt/models/weights-1.bin', Math.round(320 * MiB * scale), 'rand');
  // executables and shared libraries
  for (let i = 0; i < n(120); i++) file(`usr/bin/tool-${String(i).padStart(3, '0')}`, rng.logInt(64 * KiB, 2 * MiB), 'bin');
  file('usr/lib/x86_64-linux-gnu/libc.so.6', 2 * MiB, 'bin');
  file('usr/lib/x86_64-linux-gnu/libssl.so.3', 1 * MiB, 'bin');
  for (let i = 0; i < n(180); i++) file(`usr/lib/x86_64-linux-gnu/libdep-${String(i).padStart(3, '0')}.so`, rng.logInt(256 * KiB, 4 * MiB), 'bin');
  // an interpreter's packages: the bulk of the small files
  const pkgs = n(800);
  for (let p = 0; p < pkgs; p++) {
    const base = `usr/lib/python3/site-packages/pkg${String(p).padStart(4, '0')}`;
    for (let m = 0; m < 25; m++) {
      const r = rng.next();
      if (r < 0.7) file(`${base}/module_${String(m).padStart(2, '0')}.py`, rng.logInt(200, 64 * KiB), 'text');
      else if (r < 0.8) file(`${base}/_native_${String(m).padStart(2, '0')}.so`, rng.logInt(200, 64 * KiB), 'bin');
      else file(`${base}/data_${String(m).padStart(2, '0')}.bin`, rng.logInt(200, 64 * KiB), 'bin');
    }
  }
  for (let i = 0; i < n(3000); i++) file(`usr/share/doc/pkg-${String(i >> 3).padStart(4, '0')}/doc-${i & 7}.txt`, rng.logInt(200, 32 * KiB), 'text');
  // data
  file('var/lib/db/data.db', Math.round(160 * MiB * scale), 'bin');
  file('var/log/app/history.log', Math.round(96 * MiB * scale), 'text');
  return out;
}

/** The prefetch set handed to convertToEstargz: what the application touches at start. */
export function prioritized(list: readonly FileSpec[]): string[] {
  return list
    .filter((f) => f.type === 'file' && (f.path.startsWith('opt/app/') || /^usr\/lib\/x86_64-linux-gnu\/lib(c|ssl)\.so/.test(f.path)))
    .map((f) => f.path);
}

// ---------------------------------------------------------------- content

const BLOCK = 512;

/** Deterministic content generator: one keystream and one text pool per seed. */
class Content {
  private readonly cipher: Cipher;
  private readonly zeros = Buffer.alloc(MiB);
  private readonly pool: Buffer;
  private readonly rng: Rng;

  constructor(seed: string) {
    this.cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(`${seed}/keystream`).digest(), Buffer.alloc(16));
    this.rng = new Rng(`${seed}/content`);
    this.pool = textPool(new Rng(`${seed}/words`), 8 * MiB);
  }

  rand(n: number): Buffer {
    return this.cipher.update(n <= this.zeros.length ? this.zeros.subarray(0, n) : Buffer.alloc(n));
  }

  text(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let at = 0; at < n; ) {
      const len = Math.min(n - at, this.rng.int(512, 8192));
      const from = this.rng.int(0, this.pool.length - len);
      this.pool.copy(out, at, from, from + len);
      at += len;
    }
    return out;
  }

  /** 4 KiB blocks: 45 % keystream, 35 % text, 20 % a sparse table. */
  bin(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let at = 0; at < n; at += 4096) {
      const len = Math.min(4096, n - at);
      const r = this.rng.next();
      if (r < 0.45) this.rand(len).copy(out, at);
      else if (r < 0.8) this.text(len).copy(out, at);
      else for (let i = at; i < at + len; i += 64) out[i] = this.rng.int(0, 255);
    }
    return out;
  }

  bytes(kind: Kind, n: number): Buffer {
    return kind === 'rand' ? this.rand(n) : kind === 'text' ? this.text(n) : this.bin(n);
  }
}

/** Code-like lines: indentation, keywords, words of a Zipf-like vocabulary, numbers. gzip -6 gets about 3.5x. */
function textPool(rng: Rng, size: number): Buffer {
  const letters = 'etaoinshrdlcumwfgypbvkjxqz';
  const vocab: string[] = [];
  for (let i = 0; i < 500; i++) {
    let w = '';
    const len = rng.int(3, 10);
    for (let j = 0; j < len; j++) w += letters[Math.floor(Math.pow(rng.next(), 2) * letters.length)];
    vocab.push(w);
  }
  const keywords = ['def ', 'return ', 'self.', 'import ', 'if ', 'for ', ' in ', 'None', ' = ', '(', ')', ', ', ':', '"'];
  const parts: string[] = [];
  let total = 0;
  while (total < size) {
    let line = '    '.repeat(rng.int(0, 3));
    const words = rng.int(2, 9);
    for (let i = 0; i < words; i++) {
      if (rng.next() < 0.4) line += keywords[rng.int(0, keywords.length - 1)];
      else if (rng.next() < 0.04) line += String(rng.int(0, 9999));
      else line += vocab[Math.floor(Math.pow(rng.next(), 5) * vocab.length)]!;
      if (rng.next() < 0.5) line += ' ';
    }
    line += '\n';
    parts.push(line);
    total += line.length;
  }
  return Buffer.from(parts.join(''), 'latin1').subarray(0, size);
}

function octal(h: Buffer, offset: number, length: number, value: number): void {
  h.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'latin1');
}

function header(f: FileSpec): Buffer {
  const h = Buffer.alloc(BLOCK);
  if (Buffer.byteLength(f.path) > 100) throw new Error(`path too long for ustar: ${f.path}`);
  h.write(f.path, 0, 100, 'utf8');
  octal(h, 100, 8, f.type === 'dir' ? 0o755 : f.path.includes('/bin/') ? 0o755 : 0o644);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, f.type === 'dir' ? 0 : f.size);
  octal(h, 136, 12, 1_700_000_000);
  h.fill(0x20, 148, 156);
  h.write(f.type === 'dir' ? '5' : '0', 156, 1, 'latin1');
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  h.write('root', 265, 32, 'latin1');
  h.write('root', 297, 32, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return h;
}

/**
 * The tar stream of `list`, in ≤ 1 MiB pieces, with `onFile(path, sha256)` for every regular file
 * (the benchmark checks what it reads back against these).
 */
export async function* tarStream(seed: string, list: readonly FileSpec[], onFile?: (path: string, digest: string) => void): AsyncGenerator<Buffer> {
  const c = new Content(seed);
  for (const f of list) {
    yield header(f);
    if (f.type !== 'file') continue;
    const h = onFile ? createHash('sha256') : undefined;
    for (let left = f.size; left > 0; ) {
      const n = Math.min(left, MiB);
      const b = c.bytes(f.kind, n);
      h?.update(b);
      yield b;
      left -= n;
    }
    if (h) onFile?.(f.path, `sha256:${h.digest('hex')}`);
    const pad = (BLOCK - (f.size % BLOCK)) % BLOCK;
    if (pad) yield Buffer.alloc(pad);
  }
  yield Buffer.alloc(2 * BLOCK);
}
