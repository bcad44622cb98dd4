// Images for the hostile registry made in memory: an eStargz layer converted from a tar by our
// writer, and an OCI manifest over layers (with the TOC annotation where given).
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { convertToEstargz } from '../../src/estargz/index.js';
import type { HostileRegistry } from './hostile-registry.js';

export const TOC_DIGEST = 'containerd.io/snapshot/stargz/toc.digest';
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface BuiltLayer {
  blob: Buffer;
  digest: string;
  tocDigest?: string;
  tocOffset?: number;
}

/** An eStargz blob of `tar` (made by src/estargz's writer). */
export async function estargzLayer(tar: Buffer, chunkSize = 64 * 1024): Promise<BuiltLayer> {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      parts.push(c);
      cb();
    },
  });
  const r = await convertToEstargz(Readable.from([tar]), sink, { chunkSize, compressionLevel: 1 });
  const blob = Buffer.concat(parts);
  return { blob, digest: sha256(blob), tocDigest: r.tocDigest, tocOffset: r.tocOffset };
}

/** Stores the layers and a manifest over them as `repo:tag`; returns the manifest digest. */
export function addImage(reg: HostileRegistry, repo: string, tag: string, layers: readonly BuiltLayer[]): string {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: reg.addBlob(config), size: config.length },
    layers: layers.map((l) => ({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: reg.addBlob(l.blob),
      size: l.blob.length,
      ...(l.tocDigest ? { annotations: { [TOC_DIGEST]: l.tocDigest } } : {}),
    })),
  };
  return reg.addManifest(repo, JSON.stringify(manifest), manifest.mediaType, tag);
}
