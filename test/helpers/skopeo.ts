// Push and pull images with skopeo against registries on 127.0.0.1 (plain HTTP, or HTTPS verified
// against a test CA), isolated from /etc/containers and ~/.docker.
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Descriptor, Platform } from './images.js';
import { makeTempDir, removeDir, run } from './util.js';
import type { RunResult } from './util.js';

export interface SkopeoOptions {
  /** "user:pass" */
  creds?: string;
  /** Overall limit for the skopeo run (default 60 s). */
  timeoutMs?: number;
}

/**
 * Runs `skopeo <args>` with a private policy (insecureAcceptAnything), empty
 * auth file and registries.conf, no retries, and a command timeout.
 */
export async function skopeo(args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  const home = await makeTempDir('pullthrough-skopeo-');
  try {
    const policy = join(home, 'policy.json');
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    await writeFile(join(home, 'auth.json'), JSON.stringify({ auths: {} }));
    await writeFile(join(home, 'registries.conf'), '');
    await mkdir(join(home, 'registries.d'));
    await mkdir(join(home, 'tmp'));
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HOME: home,
      REGISTRY_AUTH_FILE: join(home, 'auth.json'),
      CONTAINERS_REGISTRIES_CONF: join(home, 'registries.conf'),
    };
    const global = [
      '--policy', policy,
      '--registries.d', join(home, 'registries.d'),
      '--tmpdir', join(home, 'tmp'),
      '--command-timeout', `${Math.ceil(timeoutMs / 1000)}s`,
    ];
    return await run('skopeo', [...global, ...args], { env, timeoutMs: timeoutMs + 5000 });
  } finally {
    await removeDir(home);
  }
}

export interface PushOptions extends SkopeoOptions {
  /** Copy every image of an index (`--all`); needed for multi-platform layouts. */
  all?: boolean;
  /** Convert manifests on the way (`--format`); digests then differ from the layout's. */
  format?: 'oci' | 'v2s2';
  /**
   * Fail rather than change any digest (`--preserve-digests`). Default: true
   * unless `format` is given (skopeo 1.9 silently ignores --format when both are set).
   */
  preserveDigests?: boolean;
}

/** Pushes an OCI layout directory to `ref` (e.g. 127.0.0.1:PORT/team/app:v1) over plain HTTP. */
export async function pushLayout(layoutDir: string, ref: string, opts: PushOptions = {}): Promise<void> {
  const args = ['copy', '--retry-times', '0', '--dest-tls-verify=false', '--quiet'];
  if (opts.all) args.push('--all');
  if (opts.preserveDigests ?? opts.format === undefined) args.push('--preserve-digests');
  if (opts.format) args.push('--format', opts.format);
  if (opts.creds) args.push('--dest-creds', opts.creds);
  args.push(`oci:${layoutDir}`, `docker://${ref}`);
  await skopeo(args, opts.timeoutMs);
}

export interface PullOptions extends SkopeoOptions {
  all?: boolean;
  /** Platform to select from an index when not pulling `all`. */
  platform?: Platform;
  /**
   * 'oci' (default) writes an OCI layout. It cannot hold a Docker manifest
   * list without converting it, so use 'dir' to pull Docker lists with `all`.
   */
  transport?: 'oci' | 'dir';
  /**
   * Pull over HTTPS, verifying the registry's certificate against the CA in this directory
   * (--src-cert-dir: *.crt are CAs, client.cert and client.key a client certificate); default:
   * TLS unverified, as plain HTTP.
   */
  certDir?: string;
}

export interface PulledImage {
  platform: Platform;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
}

export interface PullResult {
  dir: string;
  /** What the reference resolved to (index/list or manifest). */
  top: Descriptor;
  index?: Descriptor;
  images: PulledImage[];
  /** Every blob digest in the result, sorted and unique. */
  allDigests: string[];
}

interface ManifestJson {
  mediaType?: string;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

/** Pulls `ref` (over plain HTTP, or verified HTTPS with certDir) into `destDir`, then reads and re-verifies every blob digest. */
export async function pullImage(ref: string, destDir: string, opts: PullOptions = {}): Promise<PullResult> {
  const transport = opts.transport ?? 'oci';
  const global: string[] = opts.platform
    ? ['--override-os', opts.platform.os, '--override-arch', opts.platform.architecture]
    : [];
  if (opts.platform?.variant) global.push('--override-variant', opts.platform.variant);
  const tls = opts.certDir === undefined ? ['--src-tls-verify=false'] : ['--src-tls-verify=true', '--src-cert-dir', opts.certDir];
  const args = ['copy', '--retry-times', '0', ...tls, '--quiet', '--preserve-digests'];
  if (opts.all) args.push('--all');
  if (opts.creds) args.push('--src-creds', opts.creds);
  await mkdir(destDir, { recursive: true });
  // --override-* are global flags, so they go before `copy`.
  await skopeo([...global, ...args, `docker://${ref}`, `${transport}:${destDir}`], opts.timeoutMs);
  return readPulled(destDir, transport);
}

const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const desc = (d: Descriptor): Descriptor => ({ mediaType: d.mediaType, digest: d.digest, size: d.size });
const hexOf = (digest: string): string => digest.slice(digest.indexOf(':') + 1);

/** Reads a pulled `oci:` layout or `dir:` directory, checking each blob against its digest. */
async function readPulled(dir: string, transport: 'oci' | 'dir'): Promise<PullResult> {
  // oci: everything under blobs/sha256. dir: top manifest in manifest.json,
  // other manifests in <hex>.manifest.json, other blobs in <hex>.
  const pathOf = (digest: string | undefined, kind: 'manifest' | 'blob'): string => {
    if (transport === 'oci') return join(dir, 'blobs', 'sha256', hexOf(digest ?? ''));
    if (digest === undefined) return join(dir, 'manifest.json');
    return join(dir, kind === 'manifest' ? `${hexOf(digest)}.manifest.json` : hexOf(digest));
  };
  const read = async (digest: string | undefined, kind: 'manifest' | 'blob'): Promise<Buffer> => {
    const data = await readFile(pathOf(digest, kind));
    if (digest !== undefined && sha256(data) !== digest) throw new Error(`${digest} in ${dir} hashes to ${sha256(data)}`);
    return data;
  };
  const readJson = async <T>(digest: string | undefined, kind: 'manifest' | 'blob'): Promise<T> =>
    JSON.parse((await read(digest, kind)).toString('utf8')) as T;

  // The top manifest's digest: from index.json (oci), or by hashing manifest.json (dir).
  let topDigest: string | undefined;
  if (transport === 'oci') {
    const layoutIndex = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as ManifestJson;
    topDigest = layoutIndex.manifests?.at(-1)?.digest;
    if (topDigest === undefined) throw new Error(`no image in ${dir}/index.json`);
  }
  const topData = await read(topDigest, 'manifest');
  const topJson = JSON.parse(topData.toString('utf8')) as ManifestJson;
  const top: Descriptor = { mediaType: topJson.mediaType ?? '', digest: sha256(topData), size: topData.length };

  const readImage = async (manifest: Descriptor, readAs: string | undefined): Promise<PulledImage> => {
    const m = await readJson<ManifestJson>(readAs, 'manifest');
    if (!m.config || !m.layers) throw new Error(`${manifest.digest} is not an image manifest`);
    const config = await readJson<Platform>(m.config.digest, 'blob');
    for (const layer of m.layers) await read(layer.digest, 'blob');
    const platform: Platform = { os: config.os, architecture: config.architecture };
    if (config.variant !== undefined) platform.variant = config.variant;
    return { platform, manifest: desc(manifest), config: desc(m.config), layers: m.layers.map(desc) };
  };

  const images: PulledImage[] = [];
  const index = topJson.manifests ? top : undefined;
  if (topJson.manifests) {
    for (const child of topJson.manifests) images.push(await readImage(child, child.digest));
  } else {
    images.push(await readImage(top, topDigest));
  }
  const digests = new Set<string>(index ? [index.digest] : []);
  for (const img of images) for (const d of [img.manifest, img.config, ...img.layers]) digests.add(d.digest);
  return { dir, top, ...(index ? { index } : {}), images, allDigests: [...digests].sort() };
}
