// Progress on a terminal (cli-progress): a total bar, a bar for each blob while it downloads, and a
// line above them for each blob verified or failed.
import type { Writable } from 'node:stream';
import { MultiBar, type Options, type Params, type SingleBar } from 'cli-progress';
import { planText, type ImagePlan } from './plan.js';
import { bytes, duration, shortDigest, type BlobTask, type Progress, type Tally } from './progress.js';

const BAR_WIDTH = 24;
const LABEL_WIDTH = 56;

interface Payload {
  task?: BlobTask;
}

export class BarProgress implements Progress {
  private readonly bars = new Map<BlobTask, SingleBar>();
  private multi: MultiBar | undefined;
  private total: SingleBar | undefined;
  private tally: Tally | undefined;

  constructor(private readonly out: Writable) {}

  resolved(plan: ImagePlan): void {
    this.out.write(`${plan.image.text}: ${planText(plan)}\n`);
  }

  imageFailed(image: string, why: string): void {
    this.out.write(`${image}: failed: ${why}\n`);
  }

  begin(tally: Tally): void {
    this.tally = tally;
    this.multi = new MultiBar({
      stream: this.out as unknown as NodeJS.WritableStream,
      format: (_o: Options, params: Params, payload: Payload) => this.line(params, payload),
      hideCursor: true,
      // the command restores the terminal and exits on SIGINT itself; cli-progress's own handler
      // would stop the bars and leave the process running
      gracefulExit: false,
      linewrap: false,
      fps: 8,
    });
    this.total = this.multi.create(Math.max(1, tally.totalBytes), 0, {});
  }

  blobStarted(task: BlobTask): void {
    if (this.multi) this.bars.set(task, this.multi.create(Math.max(1, task.descriptor.size), 0, { task }));
  }

  blobBytes(task: BlobTask, n: number): void {
    this.bars.get(task)?.increment(n);
    this.total?.increment(n);
  }

  blobVerified(task: BlobTask): void {
    this.finish(task, `✓ ${shortDigest(task.descriptor.digest)} ${bytes(task.descriptor.size)} ${task.label}`);
  }

  blobFailed(task: BlobTask): void {
    this.finish(task, `✗ ${shortDigest(task.descriptor.digest)} ${task.label}: ${task.error ?? 'failed'}`);
  }

  end(): void {
    this.multi?.stop();
    this.multi = undefined;
  }

  private finish(task: BlobTask, text: string): void {
    const bar = this.bars.get(task);
    this.bars.delete(task);
    this.multi?.log(`${text}\n`);
    if (bar) this.multi?.remove(bar);
    else this.multi?.update();
  }

  private line(params: Params, payload: Payload): string {
    const bar = drawBar(params.progress);
    const pct = `${Math.floor(params.progress * 100)}%`.padStart(4);
    const task = payload.task;
    if (task) return `${fit(`${shortDigest(task.descriptor.digest)} ${task.label}`, LABEL_WIDTH)} ${bar} ${pct} ${bytes(task.received)}/${bytes(task.descriptor.size)}`;
    const t = this.tally!;
    const blobs = `${t.count('verified')}/${t.tasks.length} blobs`;
    return `${fit(`total (${blobs})`, LABEL_WIDTH)} ${bar} ${pct} ${bytes(t.received)}/${bytes(t.totalBytes)} ${bytes(t.rate())}/s ETA ${duration(t.etaSeconds())}`;
  }
}

function drawBar(progress: number): string {
  const full = Math.round(Math.min(1, Math.max(0, progress)) * BAR_WIDTH);
  return `${'█'.repeat(full)}${'░'.repeat(BAR_WIDTH - full)}`;
}

function fit(text: string, width: number): string {
  return text.length > width ? `${text.slice(0, width - 1)}…` : text.padEnd(width);
}
