// What warming one image means: its manifest, through an index to the platforms asked for, down to
// the blobs a client pulling it would fetch (each image's config and layers).
import { parseDigest } from '../oci/digest.js';
import type { Descriptor, Platform } from '../oci/manifest.js';
import type { ImageReference } from '../oci/reference.js';
import { WarmError, type FetchedManifest, type ServerClient } from './client.js';
import { choosePlatforms, platformText } from './platforms.js';

/** An index naming indexes is followed this deep, no deeper. */
const MAX_INDEX_DEPTH = 3;

export interface WarmImage {
  /** as the user wrote it */
  text: string;
  ref: ImageReference;
}

export interface PlannedImage {
  /** the platform its index gave it; undefined for an image reached without an index */
  platform: Platform | undefined;
  manifest: FetchedManifest;
  /** its config, then its layers */
  blobs: { descriptor: Descriptor; label: string }[];
  /** layers a client fetches from their own URLs (non-distributable, "foreign"), not from a registry */
  foreign: number;
}

export interface ImagePlan {
  image: WarmImage;
  /** the name the server routes: an upstream prefix (the host), then the repository */
  name: string;
  /** the index the reference named, when it named one */
  index: FetchedManifest | undefined;
  images: PlannedImage[];
}

/** The name pullthrough routes for an image: its host as an upstream prefix (README "Reaching several upstreams"). */
export function routeName(ref: ImageReference): string {
  return ref.host === undefined ? ref.path : `${ref.host}/${ref.path}`;
}

/** Fetches the image's manifests (so the server caches them too) and lists its blobs. Throws WarmError. */
export async function planImage(client: ServerClient, image: WarmImage, wanted: readonly Platform[] | 'all'): Promise<ImagePlan> {
  const name = routeName(image.ref);
  const top = await client.manifest(name, image.ref.reference);
  if (top.manifest.manifests === undefined) return { image, name, index: undefined, images: [imagePlan(top, undefined)] };
  const images = await throughIndex(client, name, top, wanted, 1);
  return { image, name, index: top, images };
}

async function throughIndex(client: ServerClient, name: string, index: FetchedManifest, wanted: readonly Platform[] | 'all', depth: number): Promise<PlannedImage[]> {
  const manifests = index.manifest.manifests ?? [];
  const { chosen, missing } = choosePlatforms(manifests, wanted);
  if (missing.length > 0) {
    const has = manifests.flatMap((m) => (m.platform ? [platformText(m.platform)] : []));
    throw new WarmError(`its index ${index.digest.value} has no image for ${missing.map(platformText).join(', ')} (it has ${has.length ? [...new Set(has)].join(', ') : 'no platforms'})`);
  }
  const images: PlannedImage[] = [];
  for (const d of chosen) {
    const child = await client.manifest(name, { kind: 'digest', digest: parseDigest(d.digest) }, d);
    if (child.manifest.manifests === undefined) images.push(imagePlan(child, d.platform));
    else if (depth < MAX_INDEX_DEPTH) images.push(...(await throughIndex(client, name, child, wanted === 'all' ? 'all' : d.platform ? [d.platform] : wanted, depth + 1)));
    else throw new WarmError(`its indexes nest deeper than ${MAX_INDEX_DEPTH} levels`);
  }
  return images;
}

function imagePlan(m: FetchedManifest, platform: Platform | undefined): PlannedImage {
  const { config, layers } = m.manifest;
  if (config === undefined || layers === undefined) throw new WarmError(`its manifest ${m.digest.value} (${m.mediaType}) is neither an image manifest nor an index`);
  const pulled = layers.filter((l) => !isForeign(l));
  const where = platform ? `${platformText(platform)} ` : '';
  return {
    platform,
    manifest: m,
    blobs: [{ descriptor: config, label: `${where}config` }, ...pulled.map((l, i) => ({ descriptor: l, label: `${where}layer ${i + 1}/${pulled.length}` }))],
    foreign: layers.length - pulled.length,
  };
}

/** A layer clients fetch from its `urls` (Windows base layers), which a registry need not hold. */
function isForeign(d: Descriptor): boolean {
  return (d.urls?.length ?? 0) > 0 && /foreign|nondistributable/.test(d.mediaType ?? '');
}

/** One line on what the image resolved to, e.g. "index sha256:… → linux/amd64 sha256:…". */
export function planText(plan: ImagePlan): string {
  const images = plan.images.map((i) => `${i.platform ? `${platformText(i.platform)} ` : ''}${i.manifest.digest.value}`);
  const foreign = plan.images.reduce((n, i) => n + i.foreign, 0);
  return `${plan.index ? `index ${plan.index.digest.value} → ` : ''}${images.join(', ')}${foreign ? ` (${foreign} foreign layers left to their URLs)` : ''}`;
}
