// What warm tells its user while it runs, and the figures both ways of telling share: bars on a
// terminal (bars.ts), plain lines otherwise (lines.ts).
import type { Descriptor } from '../oci/manifest.js';
import type { ImagePlan } from './plan.js';

/** One blob to fetch, once, however many images hold it. */
export interface BlobTask {
  descriptor: Descriptor;
  /** the route it is fetched through: the first image's that holds it */
  name: string;
  /** where it is first used, e.g. "alpine:3.20 linux/amd64 layer 1/3" */
  label: string;
  /** the images (as written) that hold it */
  images: string[];
  received: number;
  state: 'waiting' | 'fetching' | 'verified' | 'failed';
  error?: string | undefined;
}

export interface Progress {
  /** an image's manifests were fetched and its blobs are known */
  resolved(plan: ImagePlan): void;
  /** an image could not be resolved; its blobs will not be fetched */
  imageFailed(image: string, why: string): void;
  /** the downloads begin */
  begin(tally: Tally): void;
  blobStarted(task: BlobTask): void;
  blobBytes(task: BlobTask, n: number): void;
  blobVerified(task: BlobTask): void;
  blobFailed(task: BlobTask): void;
  /** everything ended; a reporter with timers or a terminal to restore lets go of them */
  end(): void;
}

/** The running totals of the downloads. */
export class Tally {
  readonly startedAt: number;
  received = 0;

  constructor(
    readonly tasks: readonly BlobTask[],
    private readonly now: () => number = Date.now,
  ) {
    this.startedAt = now();
  }

  get totalBytes(): number {
    return this.tasks.reduce((n, t) => n + t.descriptor.size, 0);
  }

  count(state: BlobTask['state']): number {
    return this.tasks.filter((t) => t.state === state).length;
  }

  elapsedMs(): number {
    return Math.max(1, this.now() - this.startedAt);
  }

  /** bytes per second since the downloads began */
  rate(): number {
    return (this.received * 1000) / this.elapsedMs();
  }

  /** seconds until the blobs still to come are in, at the rate so far; undefined before any byte */
  etaSeconds(): number | undefined {
    const rate = this.rate();
    if (rate <= 0) return undefined;
    const remaining = this.tasks.reduce((n, t) => n + (t.state === 'waiting' || t.state === 'fetching' ? t.descriptor.size - t.received : 0), 0);
    return remaining / rate;
  }

  /** "3.4 of 15.4 MiB (22%), 10.1 MiB/s, ETA 1s" */
  text(): string {
    const total = this.totalBytes;
    const pct = total > 0 ? Math.floor((this.received * 100) / total) : 100;
    return `${bytes(this.received)} of ${bytes(total)} (${pct}%), ${bytes(this.rate())}/s, ETA ${duration(this.etaSeconds())}`;
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** "512 B", "3.4 MiB", "1.2 GiB" */
export function bytes(n: number): string {
  let v = n;
  let unit = 0;
  while (v >= 1024 && unit < UNITS.length - 1) {
    v /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${UNITS[unit]}`;
}

/** "0s", "42s", "3m05s", "2h07m"; "?" when unknown */
export function duration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '?';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** "sha256:0123456789ab", as docker abbreviates digests */
export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':');
  return digest.slice(0, colon + 13);
}

/** "1 image", "3 images" */
export function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}
