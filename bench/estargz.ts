// npm run bench:estargz — gzip vs eStargz through pullthrough (issue 6, item 7).
//
// One source layer (bench/estargz-layer.ts: ~23.5k files, many small ones plus large ones, a mix of
// incompressible, text and binary-like content; deterministic) is gzipped (the plain layer) and
// converted with convertToEstargz (prioritized files before the prefetch landmark). Both go into
// an upstream docker-registry as single-layer OCI images; pullthrough reaches it through a
// throttle (bench/throttle.ts: BENCH_EGZ_MIBPS MiB/s shared by all connections, +BENCH_EGZ_LATENCY_MS
// on every request). Every measured unit starts a fresh pullthrough on an empty cache:
//
//   (a) one small file, cold: eStargz = GET manifest + GET /v2/<name>/_estargz/<layer>/files/<path>
//       (default config, prefetch on; also with estargz.prefetch=false); gzip = the same file API
//       (it fetches and scans the whole layer), and GET manifest + `curl blob | tar -xz` (full pull
//       and extract).
//   (b) upstream bytes of each, counted at the throttle once traffic has settled.
//   (c) a lazy client's first reads through pullthrough's Range support: manifest, footer + TOC
//       (openEstargz), the prefetch range, then 5 files (readFile, in parallel), all verified;
//       vs a full GET of the gzip layer and of the eStargz layer.
//   (d) sizes of both layers; conversion time (wall and CPU) of a 1/16-scale sample of the same
//       mix, BENCH_RUNS rounds interleaved, plus the one-off full-size figures from generation.
//
// Rounds: BENCH_RUNS (5), the order of the units rotates each round; figures are medians, ratios
// are of medians with the range of per-round ratios.
//
// Environment: BENCH_RUNS (5), BENCH_EGZ_MIBPS (100), BENCH_EGZ_LATENCY_MS (20), BENCH_EGZ_LEVEL
// (gzip level for both layers, 6), BENCH_EGZ_SCALE (1 = the ~1 GiB layer; smaller for a smoke run),
// BENCH_PULLTHROUGH_CLI (a built cli.js; default: build src/ into bench/out/dist-estargz),
// BENCH_RESULTS (bench/RESULTS.md; "-" for stdout only), BENCH_EGZ_MAX_MINUTES (30, hard stop),
// BENCH_EGZ_RENDER (a saved bench/out/estargz/last-run.json: only re-render the section and chart).
// Generated layers are kept under bench/out/estargz/ and reused when the parameters match.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { createGzip } from 'node:zlib';
import type * as Estargz from '../src/estargz/index.js';
import { startRegistry } from '../test/helpers/registry.js';
import { pushLayout } from '../test/helpers/skopeo.js';
import { makeTempDir, removeDir, run, sleep } from '../test/helpers/util.js';
import { files, prioritized, tarStream, type FileSpec } from './estargz-layer.js';
import { buildLayout, Tap } from './layout.js';
import { curlGets, logProblems, startPullthrough, type Pullthrough } from './procs.js';
import { fmt, fmtInt, max, median, min, pairedRatios, table } from './stats.js';
import { startThrottleProcess, type ThrottleProcess } from './throttle.js';
import { envNum, gitDescribe, machine, progress, pullthroughSnapshot, ROOT, srcFingerprint } from './env.js';

const OUT = join(ROOT, 'bench', 'out');
const MiB = 1 << 20;
const SEED = 'pullthrough-estargz-bench-v1';
const START = '<!-- bench/estargz.ts: start -->';
const END = '<!-- bench/estargz.ts: end -->';
const SVG_NAME = 'estargz.svg';


const cfg = {
  runs: Math.round(envNum('BENCH_RUNS', 5)),
  mibps: envNum('BENCH_EGZ_MIBPS', 100),
  latencyMs: envNum('BENCH_EGZ_LATENCY_MS', 20, true),
  level: Math.round(envNum('BENCH_EGZ_LEVEL', 6, true)),
  scale: envNum('BENCH_EGZ_SCALE', 1),
  results: process.env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md'),
  maxMinutes: envNum('BENCH_EGZ_MAX_MINUTES', 30),
};
if (cfg.level > 9) throw new Error('BENCH_EGZ_LEVEL must be 0-9');

const { say, loads, started } = progress();
setTimeout(() => {
  console.error(`bench:estargz: exceeded BENCH_EGZ_MAX_MINUTES=${cfg.maxMinutes}; aborting`);
  process.exit(3);
}, cfg.maxMinutes * 60_000).unref();

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const rotate = <T>(xs: readonly T[], k: number): T[] => xs.map((_, i) => xs[(i + k) % xs.length]!);
const mib = (b: number): number => b / MiB;

// ---------------------------------------------------------------------------------------------
// the two layers

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

interface Conversion {
  /** wall seconds */
  s: number;
  /** CPU seconds of this process (user + system, all threads) */
  cpu: number;
  bytes: number;
}

interface Layers {
  tarBytes: number;
  fileCount: number;
  dirCount: number;
  plain: { dir: string; layer: Desc; manifest: Desc };
  esgz: { dir: string; layer: Desc; manifest: Desc; tocDigest: string };
  /** sha256 of the files the benchmark reads */
  digests: Record<string, string>;
  small: string;
  five: string[];
  prioritized: string[];
  prioritizedBytes: number;
  oneOff: { generate: Conversion; gzip: Conversion; estargz: Conversion; loadavg: number; estargzSrc: string };
}

const OCI = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

async function timed<T>(f: () => Promise<T>): Promise<{ value: T; s: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await f();
  const c = process.cpuUsage(c0);
  return { value, s: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

async function writeTar(path: string, list: readonly FileSpec[], onFile?: (p: string, d: string) => void): Promise<{ bytes: number; digest: string }> {
  const tap = new Tap();
  await pipeline(Readable.from(tarStream(SEED, list, onFile), { objectMode: false }), tap, createWriteStream(path, { highWaterMark: MiB }));
  return { bytes: tap.bytes, digest: `sha256:${tap.hash.digest('hex')}` };
}

async function gzipFile(src: string, dest: string, level: number): Promise<{ digest: string; size: number }> {
  const tap = new Tap();
  await pipeline(createReadStream(src, { highWaterMark: MiB }), createGzip({ level, chunkSize: 256 * 1024 }), tap, createWriteStream(dest, { highWaterMark: MiB }));
  return { digest: `sha256:${tap.hash.digest('hex')}`, size: tap.bytes };
}

async function estargzFile(esgz: typeof Estargz, src: string, dest: string, level: number, prio: readonly string[]): Promise<Estargz.ConvertResult> {
  return esgz.convertToEstargz(() => createReadStream(src, { highWaterMark: MiB }), createWriteStream(dest, { highWaterMark: MiB }), {
    compressionLevel: level,
    prioritizedFiles: prio,
  });
}

/** The files read in (a) and (c): deterministic picks from the tree, none in the prefetch set. */
function choose(list: readonly FileSpec[], prio: readonly string[]): { small: string; five: string[] } {
  const fs = list.filter((f) => f.type === 'file' && !prio.includes(f.path));
  const total = fs.reduce((a, f) => a + f.size, 0);
  let acc = 0;
  let small: string | undefined;
  for (const f of fs) {
    acc += f.size;
    if (acc >= total / 2 && f.path.endsWith('.py') && f.size >= 4096 && f.size <= 16384) {
      small = f.path;
      break;
    }
  }
  const py = fs.filter((f) => f.path.endsWith('.py') && f.size >= 2048 && f.size <= 32768 && f.path !== small);
  /** the k-th match (the last one when there are fewer) */
  const pick = (xs: FileSpec[], k: number, what: string): string => {
    const f = xs[Math.min(k, xs.length - 1)];
    if (!f) throw new Error(`no file for ${what}`);
    return f.path;
  };
  const five = [
    pick(fs.filter((f) => f.path.startsWith('etc/') && f.size >= 1024), 3, 'a config file'),
    pick(fs.filter((f) => f.path.startsWith('usr/bin/') && f.size >= 256 * 1024 && f.size <= 1024 * 1024), 5, 'a binary'),
    pick(fs.filter((f) => f.path.includes('/libdep-') && f.size >= MiB && f.size <= 3 * MiB), 5, 'a library'),
    pick(py, Math.floor(py.length / 3), 'a module'),
    pick(py, Math.floor((2 * py.length) / 3), 'another module'),
  ];
  if (!small) throw new Error('no small file for (a)');
  return { small, five };
}

async function writeLayout(dir: string, layer: Desc, diffId: string): Promise<Desc> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (mediaType: string, data: Buffer): Promise<Desc> => {
    const d = sha256(data);
    await writeFile(join(blobs, d.slice(7)), data);
    return { mediaType, digest: d, size: data.length };
  };
  const config = await put(
    OCI.config,
    Buffer.from(JSON.stringify({ created: '2024-01-01T00:00:00Z', architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [diffId] } })),
  );
  const manifest = await put(OCI.manifest, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI.manifest, config, layers: [layer] })));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: OCI.index, manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
  return manifest;
}

async function buildLayers(esgz: typeof Estargz): Promise<Layers> {
  const key = JSON.stringify({ v: 1, seed: SEED, scale: cfg.scale, level: cfg.level, chunk: 'default' });
  const dir = join(OUT, 'estargz', `layers-${createHash('sha256').update(key).digest('hex').slice(0, 10)}`);
  const metaPath = join(dir, 'meta.json');
  try {
    const meta = JSON.parse(await readFile(metaPath, 'utf8')) as { key: string; layers: Layers };
    if (meta.key === key) {
      await stat(join(meta.layers.esgz.dir, 'blobs', 'sha256', meta.layers.esgz.layer.digest.slice(7)));
      await stat(join(meta.layers.plain.dir, 'blobs', 'sha256', meta.layers.plain.layer.digest.slice(7)));
      say(`reusing the layers in ${relative(ROOT, dir)}`);
      return meta.layers;
    }
  } catch {
    // not built yet
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const list = files(SEED, cfg.scale);
  const prio = prioritized(list);
  const { small, five } = choose(list, prio);
  const wanted = new Set([small, ...five]);
  const digests: Record<string, string> = {};
  const tarPath = join(dir, 'source.tar');
  say(`generating the source layer (${list.filter((f) => f.type === 'file').length} files) into ${relative(ROOT, tarPath)}`);
  const gen = await timed(() => writeTar(tarPath, list, (p, d) => wanted.has(p) && (digests[p] = d)));
  const tarBytes = gen.value.bytes;
  const diffPlain = gen.value.digest;
  say(`  ${fmt(mib(tarBytes), 0)} MiB of tar in ${fmt(gen.s, 1)} s; gzip -${cfg.level} (plain layer)`);
  const load0 = loadavg()[0] ?? NaN;
  const plainTmp = join(dir, 'plain.tmp');
  const gz = await timed(() => gzipFile(tarPath, plainTmp, cfg.level));
  say(`  gzip: ${fmt(mib(gz.value.size), 1)} MiB in ${fmt(gz.s, 1)} s (${fmt(gz.cpu, 1)} CPU-s); converting to eStargz`);
  const esgzTmp = join(dir, 'esgz.tmp');
  const conv = await timed(() => estargzFile(esgz, tarPath, esgzTmp, cfg.level, prio));
  say(`  eStargz: ${fmt(mib(conv.value.size), 1)} MiB in ${fmt(conv.s, 1)} s (${fmt(conv.cpu, 1)} CPU-s)`);
  const load1 = loadavg()[0] ?? NaN;

  const plainDir = join(dir, 'plain');
  const esgzDir = join(dir, 'esgz');
  const plainLayer: Desc = { mediaType: OCI.layer, digest: gz.value.digest, size: gz.value.size };
  const esgzLayer: Desc = { mediaType: OCI.layer, digest: conv.value.digest, size: conv.value.size, annotations: { ...conv.value.annotations } };
  await mkdir(join(plainDir, 'blobs', 'sha256'), { recursive: true });
  await mkdir(join(esgzDir, 'blobs', 'sha256'), { recursive: true });
  await rename(plainTmp, join(plainDir, 'blobs', 'sha256', plainLayer.digest.slice(7)));
  await rename(esgzTmp, join(esgzDir, 'blobs', 'sha256', esgzLayer.digest.slice(7)));
  const plainManifest = await writeLayout(plainDir, plainLayer, diffPlain);
  const esgzManifest = await writeLayout(esgzDir, esgzLayer, conv.value.diffId);
  await rm(tarPath, { force: true });
  const fileSpecs = list.filter((f) => f.type === 'file');
  const layers: Layers = {
    tarBytes,
    fileCount: fileSpecs.length,
    dirCount: list.length - fileSpecs.length,
    plain: { dir: plainDir, layer: plainLayer, manifest: plainManifest },
    esgz: { dir: esgzDir, layer: esgzLayer, manifest: esgzManifest, tocDigest: conv.value.tocDigest },
    digests,
    small,
    five,
    prioritized: prio,
    prioritizedBytes: fileSpecs.filter((f) => prio.includes(f.path)).reduce((a, f) => a + f.size, 0),
    oneOff: {
      generate: { s: gen.s, cpu: gen.cpu, bytes: tarBytes },
      gzip: { s: gz.s, cpu: gz.cpu, bytes: gz.value.size },
      estargz: { s: conv.s, cpu: conv.cpu, bytes: conv.value.size },
      loadavg: (load0 + load1) / 2,
      estargzSrc: await srcFingerprint('src/estargz'),
    },
  };
  await writeFile(metaPath, JSON.stringify({ key, layers }, null, 1));
  return layers;
}

/** What the eStargz blob holds, read locally with the package's own reader. */
async function inspectEsgz(esgz: typeof Estargz, layers: Layers): Promise<{ openMs: number; toc: Estargz.ByteRange; tocJsonBytes: number; entries: number; chunks: number; prefetch: Estargz.ByteRange | undefined; fileBytes: Record<string, number>; fileRanges: Record<string, number> }> {
  const path = join(layers.esgz.dir, 'blobs', 'sha256', layers.esgz.layer.digest.slice(7));
  const fh = await open(path, 'r');
  try {
    const src: Estargz.RangeSource = {
      size: layers.esgz.layer.size,
      async read(offset, length) {
        const b = Buffer.alloc(length);
        await fh.read(b, 0, length, offset);
        return b;
      },
    };
    const index = await esgz.openEstargz(src, { expectedTocDigest: layers.esgz.tocDigest });
    // what opening the TOC costs without a network: read, gunzip, digest, JSON.parse, index (median of 3)
    const openMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await esgz.openEstargz(src, { expectedTocDigest: layers.esgz.tocDigest });
      openMs.push(performance.now() - t0);
    }
    const fileBytes: Record<string, number> = {};
    const fileRanges: Record<string, number> = {};
    for (const p of [layers.small, ...layers.five]) {
      const e = index.lookup(p);
      if (!e) throw new Error(`${p} is not in the eStargz TOC`);
      fileBytes[p] = e.size;
      const span = e.chunks.length ? esgz.alignRange(index, e.chunks[0]!.offset, e.chunks[e.chunks.length - 1]!.end) : { start: 0, end: 0 };
      fileRanges[p] = span.end - span.start;
    }
    return { openMs: median(openMs), toc: index.tocRange, tocJsonBytes: index.tocJson.length, entries: index.entries.length, chunks: index.chunks.length, prefetch: esgz.prefetchRange(index), fileBytes, fileRanges };
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// (d) conversion cost, interleaved rounds on a 1/16-scale sample of the same mix

interface ConvSamples {
  sampleTarBytes: number;
  gzip: Conversion[];
  estargz: Conversion[];
}

async function conversionRounds(esgz: typeof Estargz, work: string): Promise<ConvSamples> {
  const scale = cfg.scale / 16;
  const list = files(SEED, scale);
  const tarPath = join(work, 'sample.tar');
  const tarBytes = (await writeTar(tarPath, list)).bytes;
  const prio = prioritized(list);
  say(`(d) conversion cost: ${fmt(mib(tarBytes), 1)} MiB sample tar (scale ${scale}), ${cfg.runs} rounds of gzip -${cfg.level} and eStargz -${cfg.level}`);
  // warm the page cache, so the first round is not the one that reads from disk
  for await (const _ of createReadStream(tarPath, { highWaterMark: MiB })) void _;
  const out: ConvSamples = { sampleTarBytes: tarBytes, gzip: [], estargz: [] };
  const dest = join(work, 'sample.out');
  for (let r = 0; r < cfg.runs; r++) {
    const units: Record<string, () => Promise<void>> = {
      gzip: async () => {
        const t = await timed(() => gzipFile(tarPath, dest, cfg.level));
        out.gzip.push({ s: t.s, cpu: t.cpu, bytes: t.value.size });
      },
      estargz: async () => {
        const t = await timed(() => estargzFile(esgz, tarPath, dest, cfg.level, prio));
        out.estargz.push({ s: t.s, cpu: t.cpu, bytes: t.value.size });
      },
    };
    for (const name of rotate(Object.keys(units), r)) await units[name]!();
    await rm(dest, { force: true });
    say(`  round ${r + 1}/${cfg.runs}: gzip ${fmt(out.gzip.at(-1)!.s, 1)} s, eStargz ${fmt(out.estargz.at(-1)!.s, 1)} s`);
  }
  await rm(tarPath, { force: true });
  return out;
}

// ---------------------------------------------------------------------------------------------
// the network phase

interface Sample {
  s: number;
  /** upstream bytes (throttle, downstream direction) once traffic settled */
  up: number;
  /** upstream bytes by the time the client had its answer */
  upAtEnd: number;
}

type UnitName = 'esgzFile' | 'esgzFileNoPrefetch' | 'gzipFile' | 'gzipPullExtract' | 'lazy' | 'pullGzip';

interface LazyDetail {
  tocS: number;
  prefetchS: number;
  requests: number;
  clientBytes: number;
}

async function networkRounds(layers: Layers, dist: string, esgz: typeof Estargz, work: string): Promise<{ samples: Record<UnitName, Sample[]>; lazy: LazyDetail[]; logs: string[] }> {
  say('starting the upstream docker-registry and pushing both images');
  const upstream = await startRegistry({ mode: 'open', startTimeoutMs: 30_000 });
  const cleanups: (() => Promise<void>)[] = [() => upstream.stop()];
  const samples: Record<UnitName, Sample[]> = { esgzFile: [], esgzFileNoPrefetch: [], gzipFile: [], gzipPullExtract: [], lazy: [], pullGzip: [] };
  const lazyDetails: LazyDetail[] = [];
  const logs: string[] = [];
  try {
    await pushLayout(layers.plain.dir, `${upstream.host}/plain:latest`, { timeoutMs: 900_000 });
    await pushLayout(layers.esgz.dir, `${upstream.host}/esgz:latest`, { timeoutMs: 900_000 });
    const warm = await buildLayout({ dir: join(OUT, 'estargz', 'warmup'), layers: 1, layerBytes: 4096, seed: 'estargz-bench-warmup' });
    await pushLayout(warm.dir, `${upstream.host}/warmup:latest`, { timeoutMs: 120_000 });
    const throttle: ThrottleProcess = await startThrottleProcess(upstream.url, { mibps: cfg.mibps, latencyMs: cfg.latencyMs, mode: 'aggregate' });
    cleanups.push(() => throttle.stop());
    say(`upstream ${upstream.url}, throttle ${throttle.url}: ${cfg.mibps} MiB/s aggregate, +${cfg.latencyMs} ms per request`);
    const down = async (): Promise<number> => (await throttle.stats()).down;
    /** Waits until no upstream byte moved for 800 ms (at most 20 s): background fetches included. */
    const settled = async (): Promise<number> => {
      let last = await down();
      let quiet = 0;
      for (let i = 0; i < 100 && quiet < 4; i++) {
        await sleep(200);
        const now = await down();
        quiet = now === last ? quiet + 1 : 0;
        last = now;
      }
      return last;
    };
    const noPrefetchConfig = join(work, 'no-prefetch.json');
    await writeFile(noPrefetchConfig, JSON.stringify({ estargz: { prefetch: false } }));
    const cli = join(dist, 'cli.js');
    let n = 0;
    const withPt = async <T>(prefetch: boolean, f: (pt: Pullthrough) => Promise<T>): Promise<T> => {
      const cache = join(work, `cache-${++n}`);
      const logPath = join(work, `pullthrough-${n}.log`);
      logs.push(logPath);
      const pt = await startPullthrough(cli, cache, throttle.url, logPath, prefetch ? [] : ['--config', noPrefetchConfig]);
      try {
        // warm-up, not timed: a tiny unrelated image through the same upstream, so the process and
        // its upstream connection are as in a running cache; the cache stays cold for what is measured
        await getManifest(pt, 'warmup');
        const blob = await fetch(`${pt.url}/v2/warmup/blobs/${warm.layers[0]!.digest}`, { signal: AbortSignal.timeout(60_000) });
        if (blob.status !== 200) throw new Error(`warm-up blob: ${blob.status}`);
        await blob.arrayBuffer();
        return await f(pt);
      } finally {
        await pt.stop();
        await rm(cache, { recursive: true, force: true });
      }
    };
    const getManifest = async (pt: Pullthrough, repo: string): Promise<{ layers: Desc[] }> => {
      const res = await fetch(`${pt.url}/v2/${repo}/manifests/latest`, { headers: { accept: OCI.manifest }, signal: AbortSignal.timeout(60_000) });
      if (res.status !== 200) throw new Error(`manifest of ${repo}: ${res.status}`);
      return (await res.json()) as { layers: Desc[] };
    };
    const measure = async (f: () => Promise<void>): Promise<Sample> => {
      const u0 = await down();
      const t0 = performance.now();
      await f();
      const s = (performance.now() - t0) / 1000;
      const u1 = await down();
      return { s, upAtEnd: u1 - u0, up: (await settled()) - u0 };
    };
    const fileApi = async (pt: Pullthrough, repo: string, layer: Desc): Promise<void> => {
      const m = await getManifest(pt, repo);
      if (m.layers[0]?.digest !== layer.digest) throw new Error(`${repo}: unexpected layer ${m.layers[0]?.digest}`);
      const res = await fetch(`${pt.url}/v2/${repo}/_estargz/${layer.digest}/files/${layers.small}`, { signal: AbortSignal.timeout(600_000) });
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status !== 200) throw new Error(`file API on ${repo}: ${res.status} ${body.toString('utf8').slice(0, 300)}`);
      if (sha256(body) !== layers.digests[layers.small]) throw new Error(`file API on ${repo}: wrong content for ${layers.small}`);
    };
    const fullPull = async (pt: Pullthrough, repo: string, layer: Desc): Promise<void> => {
      await getManifest(pt, repo);
      const r = await curlGets(`${pt.url}/v2/${repo}/blobs/${layer.digest}`, 1, layer.size, 600);
      if (r.failures.length) throw new Error(`full GET of ${repo}: ${r.failures.join('; ')}`);
    };

    const units: Record<UnitName, () => Promise<void>> = {
      esgzFile: async () => {
        const x = await withPt(true, (pt) => measure(() => fileApi(pt, 'esgz', layers.esgz.layer)));
        samples.esgzFile.push(x);
        say(`  eStargz file API: ${fmt(x.s, 3)} s, ${fmt(mib(x.up), 2)} MiB upstream (${fmt(mib(x.upAtEnd), 2)} by the answer)`);
      },
      esgzFileNoPrefetch: async () => {
        const x = await withPt(false, (pt) => measure(() => fileApi(pt, 'esgz', layers.esgz.layer)));
        samples.esgzFileNoPrefetch.push(x);
        say(`  eStargz file API, prefetch off: ${fmt(x.s, 3)} s, ${fmt(mib(x.up), 2)} MiB upstream`);
      },
      gzipFile: async () => {
        const x = await withPt(true, (pt) => measure(() => fileApi(pt, 'plain', layers.plain.layer)));
        samples.gzipFile.push(x);
        say(`  gzip file API: ${fmt(x.s, 2)} s, ${fmt(mib(x.up), 0)} MiB upstream`);
      },
      gzipPullExtract: async () => {
        const dest = join(work, `extract-${n}`);
        await mkdir(dest, { recursive: true });
        try {
          const x = await withPt(true, (pt) =>
            measure(async () => {
              await getManifest(pt, 'plain');
              const url = `${pt.url}/v2/plain/blobs/${layers.plain.layer.digest}`;
              await run('bash', ['-o', 'pipefail', '-c', 'curl -sSf --max-time 600 "$0" | tar -xzf - -C "$1"', url, dest], { timeoutMs: 660_000 });
            }),
          );
          const got = sha256(await readFile(join(dest, layers.small)));
          if (got !== layers.digests[layers.small]) throw new Error(`extracted ${layers.small} has the wrong content`);
          samples.gzipPullExtract.push(x);
          say(`  gzip full pull + tar -xz: ${fmt(x.s, 2)} s, ${fmt(mib(x.up), 0)} MiB upstream`);
        } finally {
          await rm(dest, { recursive: true, force: true });
        }
      },
      lazy: async () => {
        let detail: LazyDetail | undefined;
        const x = await withPt(true, (pt) =>
          measure(async () => {
            const t0 = performance.now();
            const m = await getManifest(pt, 'esgz');
            const layer = m.layers[0]!;
            const url = `${pt.url}/v2/esgz/blobs/${layer.digest}`;
            let requests = 0;
            let clientBytes = 0;
            const src: Estargz.RangeSource = {
              size: layer.size,
              async read(offset, length, signal) {
                const res = await fetch(url, { headers: { range: `bytes=${offset}-${offset + length - 1}` }, signal: signal ?? AbortSignal.timeout(120_000) });
                const b = Buffer.from(await res.arrayBuffer());
                if (res.status !== 206 || b.length !== length) throw new Error(`Range ${offset}+${length}: status ${res.status}, ${b.length} bytes`);
                requests++;
                clientBytes += length;
                return b;
              },
            };
            const index = await esgz.openEstargz(src, { expectedTocDigest: layer.annotations?.['containerd.io/snapshot/stargz/toc.digest'] });
            const tocS = (performance.now() - t0) / 1000;
            const pre = esgz.prefetchRange(index);
            if (!pre) throw new Error('the eStargz layer has no prefetch range');
            await src.read(pre.start, pre.end - pre.start);
            const prefetchS = (performance.now() - t0) / 1000;
            const got = await Promise.all(layers.five.map((p) => esgz.readFile(index, src, p)));
            got.forEach((b, i) => {
              if (sha256(b) !== layers.digests[layers.five[i]!]) throw new Error(`lazy read of ${layers.five[i]} gave the wrong content`);
            });
            detail = { tocS, prefetchS, requests, clientBytes };
          }),
        );
        samples.lazy.push(x);
        lazyDetails.push(detail!);
        say(`  lazy client first reads: ${fmt(x.s, 3)} s (TOC at ${fmt(detail!.tocS, 3)} s, prefetch at ${fmt(detail!.prefetchS, 3)} s), ${fmt(mib(x.up), 2)} MiB upstream`);
      },
      pullGzip: async () => {
        const x = await withPt(true, (pt) => measure(() => fullPull(pt, 'plain', layers.plain.layer)));
        samples.pullGzip.push(x);
        say(`  gzip full pull: ${fmt(x.s, 2)} s`);
      },
    };
    for (let r = 0; r < cfg.runs; r++) {
      say(`round ${r + 1}/${cfg.runs}`);
      for (const name of rotate(Object.keys(units) as UnitName[], r)) await units[name]();
    }
  } finally {
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => say(`cleanup: ${String(e)}`));
  }
  return { samples, lazy: lazyDetails, logs };
}

// ---------------------------------------------------------------------------------------------
// report

interface Report {
  date: string;
  mach: Record<string, string>;
  note: string;
  git: string;
  fingerprint: string;
  layers: Layers;
  info: Awaited<ReturnType<typeof inspectEsgz>>;
  conv: ConvSamples;
  samples: Record<UnitName, Sample[]>;
  lazy: LazyDetail[];
  problems: string[];
  runtime: number;
}

const secs = (xs: readonly Sample[]): number[] => xs.map((x) => x.s);
const ups = (xs: readonly Sample[]): number[] => xs.map((x) => x.up);

/** "48× (41–55)": ratio of the medians of b/a, then the range of per-round ratios. */
function speedup(slow: readonly number[], fast: readonly number[]): string {
  const per = pairedRatios(slow, fast);
  return `${fmt(median(slow) / median(fast), 1)}× (${fmt(min(per), 1)}–${fmt(max(per), 1)})`;
}

function render(x: Report): string {
  const { samples: S, layers: L, info } = x;
  const size = { plain: L.plain.layer.size, esgz: L.esgz.layer.size };
  const out: string[] = [];
  const verdict = (ok: boolean): string => (ok ? '**met**' : '**NOT met**');
  const aRatio = median(secs(S.gzipPullExtract)) / median(secs(S.esgzFile));
  const bMax = max(ups(S.esgzFile)) / size.esgz;
  out.push(`Generated by \`npm run bench:estargz\` (bench/estargz.ts). Medians of ${cfg.runs} rounds run in this one invocation; the order of the units rotates each round and every unit starts a fresh pullthrough on an empty cache (warmed up, untimed, by one manifest and one 4 KiB blob of an unrelated image, so its upstream connection is open as in a running cache). Ratios are of the medians, with the range of the per-round ratios in brackets.`);
  out.push('');
  out.push(`- date: ${x.date}; total runtime ${fmt(x.runtime / 60, 1)} min; 1-minute load average at progress lines: median ${fmt(median(loads), 1)}, max ${fmt(max(loads), 1)} on ${x.mach.nproc} cores`);
  out.push(`- machine: ${Object.entries(x.mach).map(([k, v]) => `${k} ${v}`).join('; ')}`);
  out.push(`- pullthrough: ${x.note}; git ${x.git}; src fingerprint ${x.fingerprint}; default config except where it says prefetch off`);
  out.push(`- upstream: docker-registry (filesystem storage) behind bench/throttle.ts: ${cfg.mibps} MiB/s shared by all connections, +${cfg.latencyMs} ms on every request (a one-way delay on request bytes)`);
  out.push(`- the layer (bench/estargz-layer.ts, seed \`${SEED}\`, scale ${cfg.scale}): ${fmtInt(L.fileCount)} files in ${fmtInt(L.dirCount)} directories, ${fmt(mib(L.tarBytes), 0)} MiB of tar: two incompressible 320 MiB model files, a 160 MiB binary-like database, a 96 MiB text log, and ${fmtInt(L.fileCount - 4)} small and medium files (~20k Python-like modules and data files of 0.2–64 KiB, 3k docs, 200 configs, 300 binaries and libraries of 64 KiB–4 MiB); sizes and counts × scale`);
  out.push(`- both layers gzip level ${cfg.level} (zlib's default; the eStargz reference converter uses 9, which Node's zlib runs at roughly half the speed here), eStargz chunk size 4 MiB; prioritized (prefetch) set: ${L.prioritized.length} files, ${fmt(mib(L.prioritizedBytes), 1)} MiB uncompressed, ${fmt(mib(info.prefetch ? info.prefetch.end - info.prefetch.start : 0), 2)} MiB compressed before \`.prefetch.landmark\``);
  out.push(`- (a) reads \`${L.small}\` (${fmtInt(info.fileBytes[L.small] ?? NaN)} bytes, at about the middle of the layer); (c) reads ${L.five.map((p) => `\`${p}\` (${fmtInt(info.fileBytes[p] ?? NaN)} B)`).join(', ')}`);
  out.push('');
  out.push(`![gzip vs eStargz through pullthrough](${SVG_NAME})`);
  out.push('');

  out.push(`### (a, b) One small file, cold`);
  out.push('');
  out.push('Time from the first request to the verified file. eStargz: GET the manifest, then GET `/v2/esgz/_estargz/<layer>/files/<path>` (pullthrough fetches the footer, the TOC and that file\'s chunk by Range). gzip, file API: the same request on the plain image (pullthrough fetches the whole layer, caches it, scans it). gzip, full pull + extract: GET the manifest, then `curl <blob> | tar -xzf -` through pullthrough. Upstream MiB = bytes the throttle carried towards pullthrough, counted once traffic had been still for 0.8 s (so the background prefetch counts); "by the answer" = counted when the client had its file.');
  out.push('');
  const row = (name: string, xs: Sample[], ratio: string): string[] => [
    name, fmt(median(secs(xs)), 3), `${fmt(min(secs(xs)), 3)}–${fmt(max(secs(xs)), 3)}`, fmt(mib(median(ups(xs))), 2), fmt(mib(median(xs.map((s) => s.upAtEnd))), 2), `${fmt((100 * median(ups(xs))) / (xs === S.gzipFile || xs === S.gzipPullExtract || xs === S.pullGzip ? size.plain : size.esgz), 2)} %`, ratio,
  ];
  out.push(
    table(
      ['how', 'median s', 'range s', 'upstream MiB', 'upstream MiB by the answer', '% of the layer', 'eStargz file API is … faster'],
      [
        row('eStargz, file API', S.esgzFile, '—'),
        row('eStargz, file API, prefetch off', S.esgzFileNoPrefetch, '—'),
        row('gzip, file API', S.gzipFile, speedup(secs(S.gzipFile), secs(S.esgzFile))),
        row('gzip, full pull + `tar -xz`', S.gzipPullExtract, speedup(secs(S.gzipPullExtract), secs(S.esgzFile))),
      ],
    ),
  );
  out.push('');
  out.push(`What the eStargz read needs: the 51-byte footer, the TOC (${fmt(mib(info.toc.end - info.toc.start), 2)} MiB compressed, ${fmt(mib(info.tocJsonBytes), 2)} MiB of JSON, ${fmtInt(info.entries)} entries, ${fmtInt(info.chunks)} chunks) and the file's own segment (${fmtInt(info.fileRanges[L.small] ?? NaN)} bytes). Opening that TOC (gunzip, digest check, JSON.parse, index) takes ${fmtInt(info.openMs)} ms from a local file in the bench process, median of 3, part of every cold eStargz read here; with prefetch on, pullthrough also fetches the ${fmt(mib(info.prefetch ? info.prefetch.end : 0), 2)} MiB prefetch range in the background as soon as it opens the layer.`);
  out.push('');

  out.push('### (c) A lazy client\'s first reads vs a full pull, cold');
  out.push('');
  out.push(`The lazy client is the eStargz reader of src/estargz used as a client library over HTTP Range requests to pullthrough: GET the manifest; footer + TOC (openEstargz, the TOC checked against the manifest's toc.digest annotation); the prefetch range [0, landmark); then the 5 files with readFile, in parallel, every chunk verified. Full pull = GET the manifest, then one \`curl\` GET of the whole gzip blob through pullthrough (download only, no extraction; a full pull of the eStargz blob moves ${fmt(size.esgz / size.plain, 3)}× the bytes, see (d)).`);
  out.push('');
  const lz = x.lazy;
  out.push(
    table(
      ['how', 'median s', 'range s', 'upstream MiB', '% of its layer', 'lazy first reads are … faster'],
      [
        [`eStargz, lazy: footer + TOC, prefetch, 5 files (${fmt(median(lz.map((d) => d.requests)), 0)} Range requests, ${fmt(mib(median(lz.map((d) => d.clientBytes))), 2)} MiB to the client)`, fmt(median(secs(S.lazy)), 3), `${fmt(min(secs(S.lazy)), 3)}–${fmt(max(secs(S.lazy)), 3)}`, fmt(mib(median(ups(S.lazy))), 2), `${fmt((100 * median(ups(S.lazy))) / size.esgz, 2)} %`, '—'],
        ['gzip, full pull', fmt(median(secs(S.pullGzip)), 2), `${fmt(min(secs(S.pullGzip)), 2)}–${fmt(max(secs(S.pullGzip)), 2)}`, fmt(mib(median(ups(S.pullGzip))), 0), `${fmt((100 * median(ups(S.pullGzip))) / size.plain, 1)} %`, speedup(secs(S.pullGzip), secs(S.lazy))],
      ],
    ),
  );
  out.push('');
  out.push(`Inside the lazy run (medians): footer + TOC done at ${fmt(median(lz.map((d) => d.tocS)), 3)} s, prefetch range at ${fmt(median(lz.map((d) => d.prefetchS)), 3)} s, the 5 files at ${fmt(median(secs(S.lazy)), 3)} s.`);
  out.push('');

  out.push('### (d) Size and conversion cost');
  out.push('');
  const cg = x.conv.gzip;
  const ce = x.conv.estargz;
  out.push(
    table(
      ['', 'gzip', 'eStargz', 'eStargz ÷ gzip'],
      [
        ['layer size (MiB)', fmt(mib(size.plain), 1), fmt(mib(size.esgz), 1), fmt(size.esgz / size.plain, 4)],
        ['of which TOC + footer (MiB)', '—', fmt(mib(info.toc.end - info.toc.start + 51), 2), '—'],
        [`conversion of the full layer, wall s (one-off, load avg ${fmt(L.oneOff.loadavg, 1)})`, fmt(L.oneOff.gzip.s, 1), fmt(L.oneOff.estargz.s, 1), fmt(L.oneOff.estargz.s / L.oneOff.gzip.s, 2)],
        ['conversion of the full layer, CPU s (one-off)', fmt(L.oneOff.gzip.cpu, 1), fmt(L.oneOff.estargz.cpu, 1), fmt(L.oneOff.estargz.cpu / L.oneOff.gzip.cpu, 2)],
        [`conversion of a ${fmt(mib(x.conv.sampleTarBytes), 0)} MiB sample of the same mix, wall s (median of ${cfg.runs})`, fmt(median(cg.map((c) => c.s)), 2), fmt(median(ce.map((c) => c.s)), 2), `${fmt(median(ce.map((c) => c.s)) / median(cg.map((c) => c.s)), 2)} (${fmt(min(pairedRatios(ce.map((c) => c.s), cg.map((c) => c.s))), 2)}–${fmt(max(pairedRatios(ce.map((c) => c.s), cg.map((c) => c.s))), 2)})`],
        ['same sample, CPU s (median)', fmt(median(cg.map((c) => c.cpu)), 2), fmt(median(ce.map((c) => c.cpu)), 2), `${fmt(median(ce.map((c) => c.cpu)) / median(cg.map((c) => c.cpu)), 2)} (${fmt(min(pairedRatios(ce.map((c) => c.cpu), cg.map((c) => c.cpu))), 2)}–${fmt(max(pairedRatios(ce.map((c) => c.cpu), cg.map((c) => c.cpu))), 2)})`],
        ['same sample, output MiB', fmt(mib(cg[0]?.bytes ?? NaN), 2), fmt(mib(ce[0]?.bytes ?? NaN), 2), fmt((ce[0]?.bytes ?? NaN) / (cg[0]?.bytes ?? NaN), 4)],
      ],
    ),
  );
  out.push('');
  out.push(`gzip = \`createGzip({ level: ${cfg.level} })\` over the tar, one stream. eStargz = \`convertToEstargz\` over the same tar (two passes, because of the prioritized files), one gzip member per chunk, compressed in libuv's thread pool with up to 3 members in flight, so it can use both cores: compare CPU seconds for the cost and wall seconds for the wait. The one-off figures come from the run that generated the cached layers (src/estargz fingerprint ${L.oneOff.estargzSrc}); the sample rounds use the code of this run.`);
  out.push('');

  out.push('### Targets');
  out.push('');
  out.push(
    table(
      ['target', 'measured', 'verdict'],
      [
        ['(a) one small file cold: eStargz file API ≥ 20× faster than gzip full pull + extract', speedup(secs(S.gzipPullExtract), secs(S.esgzFile)), verdict(aRatio >= 20)],
        ['(b) upstream bytes for that file < 2 % of the layer', `median ${fmt((100 * median(ups(S.esgzFile))) / size.esgz, 2)} %, max ${fmt(100 * bMax, 2)} % (prefetch on); ${fmt((100 * median(ups(S.esgzFileNoPrefetch))) / size.esgz, 3)} % with prefetch off`, verdict(bMax < 0.02)],
      ],
    ),
  );
  out.push('');
  out.push(`pullthrough log (level warn and above): ${x.problems.length ? `${x.problems.length} line(s), e.g. ${x.problems.slice(0, 3).join(' | ')}` : 'nothing'}.`);
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// chart: two log-scale panels (time, upstream MiB) sharing one row per measurement

function svgChart(x: Report): string {
  const S = x.samples;
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  type Row = { label: string; s: number; mib: number; lazy: boolean } | { group: string };
  const rows: Row[] = [
    { group: '(a, b) read one small file, cold' },
    { label: 'eStargz: file API', s: median(secs(S.esgzFile)), mib: mib(median(ups(S.esgzFile))), lazy: true },
    { label: 'gzip: file API (whole layer)', s: median(secs(S.gzipFile)), mib: mib(median(ups(S.gzipFile))), lazy: false },
    { label: 'gzip: full pull + tar -xz', s: median(secs(S.gzipPullExtract)), mib: mib(median(ups(S.gzipPullExtract))), lazy: false },
    { group: '(c) first reads: TOC + prefetch + 5 files' },
    { label: 'eStargz: lazy Range reads', s: median(secs(S.lazy)), mib: mib(median(ups(S.lazy))), lazy: true },
    { label: 'gzip: full pull', s: median(secs(S.pullGzip)), mib: mib(median(ups(S.pullGzip))), lazy: false },
  ];
  const bars = rows.filter((r): r is Extract<Row, { label: string }> => 'label' in r);
  const W = 960;
  const labelW = 230;
  const panelW = 330;
  const gap = 40;
  const top = 92;
  const rowH = 30;
  const groupH = 28;
  const H = top + bars.length * rowH + 2 * groupH + 70;
  /** [lowest decade, log10 of the axis end]: the axis ends a quarter past the largest value */
  const decades = (vals: number[]): [number, number] => {
    const lo = Math.floor(Math.log10(Math.min(...vals)));
    return [lo, Math.max(Math.log10(Math.max(...vals) * 1.25), lo + 1)];
  };
  const tDec = decades(bars.map((b) => b.s));
  const bDec = decades(bars.map((b) => Math.max(b.mib, 0.01)));
  const x0 = [labelW, labelW + panelW + gap];
  const scale = (v: number, dec: [number, number]): number => ((Math.log10(Math.max(v, 10 ** dec[0])) - dec[0]) / (dec[1] - dec[0])) * panelW;
  const fmtV = (v: number, unit: string): string => (v >= 100 ? fmtInt(v) : v >= 10 ? fmt(v, 1) : v >= 1 ? fmt(v, 2) : fmt(v, 3)) + unit;
  const tick = (e: number, unit: string): string => (e >= 0 ? fmtInt(10 ** e) : String(10 ** e).replace(/0+$/, '')) + unit;
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="13">`);
  o.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  const a = median(secs(S.gzipPullExtract)) / median(secs(S.esgzFile));
  const c = median(secs(S.pullGzip)) / median(secs(S.lazy));
  o.push(`<text x="16" y="28" font-size="18" font-weight="bold">gzip vs eStargz through pullthrough, ${fmt(mib(x.layers.plain.layer.size), 0)} MiB layer, cold cache</text>`);
  o.push(`<text x="16" y="50" fill="#333">One small file: ${fmtV(median(secs(S.esgzFile)), ' s')} vs ${fmtV(median(secs(S.gzipPullExtract)), ' s')} (${fmt(a, 0)}× faster), ${fmtV(mib(median(ups(S.esgzFile))), ' MiB')} vs ${fmtV(mib(median(ups(S.gzipPullExtract))), ' MiB')} from upstream. First reads: ${fmt(c, 0)}× faster than a full pull.</text>`);
  const panels: [string, [number, number], (b: (typeof bars)[number]) => number, string][] = [
    ['time, seconds (log scale; shorter is better)', tDec, (b) => b.s, ' s'],
    ['fetched from upstream, MiB (log scale)', bDec, (b) => b.mib, ' MiB'],
  ];
  const bottom = H - 48;
  panels.forEach(([title, dec, val, unit], p) => {
    const px = x0[p]!;
    o.push(`<text x="${px}" y="${top - 14}" font-weight="bold">${esc(title)}</text>`);
    for (let e = dec[0]; e <= Math.floor(dec[1]); e++) {
      const gx = px + ((e - dec[0]) / (dec[1] - dec[0])) * panelW;
      o.push(`<line x1="${gx.toFixed(1)}" y1="${top - 4}" x2="${gx.toFixed(1)}" y2="${bottom}" stroke="#ddd"/>`);
      o.push(`<text x="${gx.toFixed(1)}" y="${bottom + 16}" text-anchor="middle" fill="#555" font-size="11">${tick(e, unit)}</text>`);
    }
    let y = top;
    for (const r of rows) {
      if ('group' in r) {
        if (p === 0) o.push(`<text x="16" y="${y + 18}" font-weight="bold" fill="#222">${esc(r.group)}</text>`);
        y += groupH;
        continue;
      }
      if (p === 0) o.push(`<text x="${labelW - 10}" y="${y + 19}" text-anchor="end">${esc(r.label)}</text>`);
      const w = Math.max(2, scale(val(r), dec));
      o.push(`<rect x="${px}" y="${y + 6}" width="${w.toFixed(1)}" height="${rowH - 10}" fill="${r.lazy ? '#2e8b57' : '#9aa0a6'}"/>`);
      const inside = w > panelW - 70;
      o.push(`<text x="${(px + (inside ? w - 6 : w + 6)).toFixed(1)}" y="${y + 19}" ${inside ? 'text-anchor="end" fill="#fff"' : 'fill="#222"'} font-size="12">${fmtV(val(r), unit)}</text>`);
      y += rowH;
    }
  });
  o.push(`<text x="16" y="${H - 12}" fill="#666" font-size="11">Green = eStargz, read lazily. docker-registry upstream behind ${cfg.mibps} MiB/s + ${cfg.latencyMs} ms per request; empty pullthrough cache each time; medians of ${x.samples.esgzFile.length}; ${esc(x.date.slice(0, 10))}</text>`);
  o.push('</svg>');
  return o.join('\n') + '\n';
}

async function writeSection(path: string, body: string): Promise<void> {
  // re-read right before writing: other benchmarks edit this file too
  const text = await readFile(path, 'utf8').catch(() => '');
  const section = `${START}\n## gzip vs eStargz (bench/estargz.ts)\n\n${body}\n${END}`;
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  const next = a >= 0 && b > a ? `${text.slice(0, a)}${section}${text.slice(b + END.length)}` : `${text}${text && !text.endsWith('\n\n') ? (text.endsWith('\n') ? '\n' : '\n\n') : ''}${section}\n`;
  await writeFile(path, next);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const again = process.env.BENCH_EGZ_RENDER;
  if (again) {
    // re-render the chart and the section from a saved run (bench/out/estargz/last-run.json)
    const saved = JSON.parse(await readFile(again, 'utf8')) as { cfg: typeof cfg; loads: number[]; report: Report };
    Object.assign(cfg, { ...saved.cfg, results: cfg.results });
    loads.push(...saved.loads);
    const body = render(saved.report);
    console.log(body);
    if (cfg.results !== '-') {
      await writeFile(join(dirname(cfg.results), SVG_NAME), svgChart(saved.report));
      await writeSection(cfg.results, body);
    }
    return;
  }
  say(`config: ${JSON.stringify(cfg)}`);
  await mkdir(OUT, { recursive: true });
  const { cli, note, fingerprint } = await pullthroughSnapshot('dist-estargz', say);
  const dist = dirname(cli);
  const esgz = (await import(pathToFileURL(join(dist, 'estargz', 'index.js')).href)) as typeof Estargz;
  const git = gitDescribe(ROOT);
  const mach = await machine(['docker-registry', 'tar', 'curl']);
  const date = new Date().toISOString();
  const layers = await buildLayers(esgz);
  const info = await inspectEsgz(esgz, layers);
  say(`layers: gzip ${fmt(mib(layers.plain.layer.size), 1)} MiB, eStargz ${fmt(mib(layers.esgz.layer.size), 1)} MiB (TOC ${fmt(mib(info.toc.end - info.toc.start), 2)} MiB, prefetch ${fmt(mib(info.prefetch?.end ?? 0), 2)} MiB)`);
  const work = await makeTempDir('pullthrough-bench-esgz-');
  let report: Report;
  try {
    const conv = await conversionRounds(esgz, work);
    const { samples, lazy, logs } = await networkRounds(layers, dist, esgz, work);
    const problems = await logProblems(logs);
    report = { date, mach, note, git, fingerprint, layers, info, conv, samples, lazy, problems, runtime: (performance.now() - started) / 1000 };
  } finally {
    await removeDir(work);
  }
  await writeFile(join(OUT, 'estargz', 'last-run.json'), JSON.stringify({ cfg, loads, report }, null, 1));
  const body = render(report);
  console.log('\n' + body);
  if (cfg.results !== '-') {
    await writeFile(join(dirname(cfg.results), SVG_NAME), svgChart(report));
    await writeSection(cfg.results, body);
    say(`wrote ${relative(process.cwd(), cfg.results)} and ${SVG_NAME} beside it`);
  } else {
    await writeFile(join(OUT, 'estargz', SVG_NAME), svgChart(report));
    say(`chart: ${relative(process.cwd(), join(OUT, 'estargz', SVG_NAME))}`);
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
