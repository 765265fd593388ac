// The piscina pool that computes batches over one set of shared samples (or over samples each task brings), used by the in-process stream and by the
// augmentation server alike: a crashed worker's batch is retried once on its replacement.
import { Piscina } from 'piscina';
import type { BatchResult, BatchTask, PingTask, SharedSamples } from './worker.js';

export type BatchWarmup = NonNullable<PingTask['warmup']>;

/** Synthetic images each worker samples in warmUp() (about 60 ms once compiled). */
const WARMUP_IMAGES = 300;

export class BatchPool {
  /** batches retried after a worker crash */
  retries = 0;
  private readonly pool: Piscina;
  private destroyed = false;

  constructor(
    shared: SharedSamples | null,
    readonly workers: number,
  ) {
    this.pool = new Piscina({
      // worker.ts beside this file, or worker.js when running compiled (dist/node, tools/build.mjs).
      filename: new URL(`./worker${import.meta.url.slice(import.meta.url.lastIndexOf('.'))}`, import.meta.url).href,
      minThreads: workers,
      maxThreads: workers,
      idleTimeout: 60_000,
      workerData: shared,
    });
  }

  /** Tasks waiting for a free worker. */
  get queueSize(): number {
    return this.pool.queueSize;
  }

  /**
   * Runs one batch, writing into `recycled` (an ArrayBuffer moved to the worker, or a batch memory) when given.
   * `what` names the batch in the error of a second failure.
   */
  run(
    task: BatchTask,
    recycled?: ArrayBuffer | WebAssembly.Memory,
    what = `a batch of epoch ${task.epoch}`,
  ): Promise<BatchResult> {
    const first = (
      recycled instanceof ArrayBuffer
        ? this.pool.run({ ...task, out: recycled }, { transferList: [recycled] })
        : this.pool.run(recycled ? { ...task, memory: recycled } : task)
    ) as Promise<BatchResult>;
    // A crashed worker is replaced by piscina; its task is retried once on the new worker (with a fresh buffer:
    // the recycled one went down with the worker).
    return first.catch((err: unknown) => {
      if (this.destroyed) throw err;
      this.retries++;
      return (this.pool.run(task) as Promise<BatchResult>).catch((again: unknown) => {
        throw new Error(`augment: ${what} failed twice: ${(again as Error).message}`, { cause: again });
      });
    });
  }

  /**
   * Resolves once every worker thread has started and run its per-image path on a few hundred synthetic images, so
   * that V8 has compiled it before the first real batch.
   */
  async warmUp(warmup: Omit<BatchWarmup, 'images'>): Promise<void> {
    const seen = new Set<number>();
    for (let round = 0; round < 100 && seen.size < this.workers && !this.destroyed; round++) {
      const pings = Array.from(
        { length: this.workers },
        () =>
          this.pool.run({ ping: true, holdMs: 20, warmup: { ...warmup, images: WARMUP_IMAGES } }) as Promise<{
            threadId: number;
          }>,
      );
      for (const p of await Promise.all(pings)) seen.add(p.threadId);
    }
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
    await this.pool.destroy();
  }
}
