// Progress as plain lines, for logs and CI (stdout not a terminal): what each image resolved to, a
// line per blob verified or failed with the running totals (bytes, rate, ETA), and a totals line
// every few seconds while downloads run, so a long layer still shows signs of life.
import type { Writable } from 'node:stream';
import { planText, type ImagePlan } from './plan.js';
import { bytes, count, shortDigest, type BlobTask, type Progress, type Tally } from './progress.js';

export class LineProgress implements Progress {
  private tally: Tally | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly out: Writable,
    private readonly server: string,
    private readonly everyMs = 5000,
  ) {}

  resolved(plan: ImagePlan): void {
    const blobs = plan.images.flatMap((i) => i.blobs);
    const size = blobs.reduce((n, b) => n + b.descriptor.size, 0);
    this.write(`${plan.image.text}: ${planText(plan)}; ${count(blobs.length, 'blob')}, ${bytes(size)}`);
  }

  imageFailed(image: string, why: string): void {
    this.write(`${image}: failed: ${why}`);
  }

  begin(tally: Tally): void {
    this.tally = tally;
    this.write(`fetching ${count(tally.tasks.length, 'blob')} (${bytes(tally.totalBytes)}) through ${this.server}`);
    this.timer = setInterval(() => {
      const fetching = tally.count('fetching');
      if (fetching > 0) this.write(`progress: ${tally.text()}; ${fetching} downloading`);
    }, this.everyMs);
    this.timer.unref();
  }

  blobStarted(): void {}

  blobBytes(): void {}

  blobVerified(task: BlobTask): void {
    this.write(`verified ${shortDigest(task.descriptor.digest)} ${bytes(task.descriptor.size)} ${task.label} [${this.done()} blobs, ${this.tally!.text()}]`);
  }

  blobFailed(task: BlobTask): void {
    this.write(`failed ${shortDigest(task.descriptor.digest)} ${task.label}: ${task.error ?? 'failed'} [${this.done()} blobs]`);
  }

  end(): void {
    clearInterval(this.timer);
  }

  private done(): string {
    const t = this.tally!;
    return `${t.count('verified') + t.count('failed')}/${t.tasks.length}`;
  }

  private write(line: string): void {
    this.out.write(`${line}\n`);
  }
}
