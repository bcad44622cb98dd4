// Warming: every image's manifests resolved, then every blob they hold fetched once through the
// server (so that it, and a bucket it shares with other replicas, caches it), checked as it
// streams, a few at a time. The report says, per image, whether all of it was fetched and verified.
import type { Platform } from '../oci/manifest.js';
import { forEachLimited } from '../lib/pool.js';
import { WarmError, type ServerClient } from './client.js';
import { planImage, type ImagePlan, type WarmImage } from './plan.js';
import { Tally, type BlobTask, type Progress } from './progress.js';

export interface WarmOptions {
  images: readonly WarmImage[];
  platforms: readonly Platform[] | 'all';
  /** downloads (and manifest resolutions) at a time */
  concurrency: number;
}

export interface WarmReport {
  /** per image, in the order given: why it is not warm, or undefined when all of it is */
  images: { image: string; error: string | undefined }[];
  tally: Tally;
}

export async function warm(client: ServerClient, o: WarmOptions, progress: Progress): Promise<WarmReport> {
  const plans = new Map<WarmImage, ImagePlan>();
  const errors = new Map<WarmImage, string>();
  await forEachLimited(o.images, o.concurrency, async (image) => {
    try {
      const plan = await planImage(client, image, o.platforms);
      plans.set(image, plan);
      progress.resolved(plan);
    } catch (e) {
      const why = messageOf(e);
      errors.set(image, why);
      progress.imageFailed(image.text, why);
    }
  });

  const tasks = blobTasks(o.images.flatMap((i) => plans.get(i) ?? []));
  const tally = new Tally(tasks);
  if (tasks.length > 0) progress.begin(tally);
  try {
    await forEachLimited(tasks, o.concurrency, async (task) => {
      task.state = 'fetching';
      progress.blobStarted(task);
      try {
        await client.blob(task.name, task.descriptor, (n) => {
          task.received += n;
          tally.received += n;
          progress.blobBytes(task, n);
        });
        task.state = 'verified';
        progress.blobVerified(task);
      } catch (e) {
        task.state = 'failed';
        task.error = messageOf(e);
        progress.blobFailed(task);
      }
    });
  } finally {
    progress.end();
  }

  const images = o.images.map((image) => {
    const failed = tasks.filter((t) => t.state === 'failed' && t.images.includes(image.text));
    const error = errors.get(image) ?? (failed.length ? failed.map((t) => `blob ${t.descriptor.digest} (${t.label}): ${t.error}`).join('; ') : undefined);
    return { image: image.text, error };
  });
  return { images, tally };
}

/**
 * One task per blob, however many images or platforms share it, fetched through the route of the
 * first image holding it (the cache is content-addressed, so one fetch warms it for all). Largest
 * first: a huge layer starts at once instead of last, which ends the whole sooner.
 */
function blobTasks(plans: readonly ImagePlan[]): BlobTask[] {
  const byDigest = new Map<string, BlobTask>();
  for (const plan of plans) {
    for (const { descriptor, label } of plan.images.flatMap((i) => i.blobs)) {
      const known = byDigest.get(descriptor.digest);
      if (known) {
        if (!known.images.includes(plan.image.text)) known.images.push(plan.image.text);
        continue;
      }
      byDigest.set(descriptor.digest, { descriptor, name: plan.name, label: `${plan.image.text} ${label}`, images: [plan.image.text], received: 0, state: 'waiting' });
    }
  }
  return [...byDigest.values()].sort((a, b) => b.descriptor.size - a.descriptor.size);
}

function messageOf(e: unknown): string {
  if (e instanceof WarmError) return e.message;
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
