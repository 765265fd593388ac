// The datasets a server holds open, each with its own worker pool, a few at once (least recently used idle one
// closed to open another).
import { UserError } from '@catdog/errors';
import { BatchPool } from '../batch-pool.js';
import type { DatasetRef } from './protocol.js';
import { openServedSamples, type ServedReadOptions, type ServedSamples } from './served-samples.js';

/** One open (dataset, split): its samples, its pool, and what its calls reuse. */
export interface Served {
  data: ServedSamples;
  classes: string[];
  size: number;
  pool: BatchPool;
  /** epoch orders by `${shuffle}/${seed}/${epoch}`, a few kept (in-memory datasets) */
  orders: Map<string, number[]>;
  warmed: Set<string>;
  /** released batch memories, reused by later batches */
  spare: WebAssembly.Memory[];
  calls: number;
  usedAt: number;
  /** the pool's tasks not settled yet (batches, warm-ups): a pool is destroyed only once they are */
  running: Set<Promise<unknown>>;
}

/** Runs `task` on the dataset's pool, counted among its running tasks until it settles. */
export function track<T>(s: Served, task: Promise<T>): Promise<T> {
  s.running.add(task);
  const done = () => s.running.delete(task);
  task.then(done, done);
  return task;
}

/**
 * Destroys a dataset's pool once its tasks have settled. Terminating a worker thread while sharp (libvips) is inside
 * a native call aborts the whole process ("terminate called after throwing an instance of 'Napi::Error'"), so a
 * running batch is let finish (a batch takes tens of milliseconds) rather than cut off.
 */
async function destroyWhenIdle(s: Served): Promise<{ waited: number; running: number }> {
  const waited = s.running.size;
  while (s.running.size > 0) await Promise.allSettled([...s.running]);
  const running = s.running.size; // 0: checked by the shutdown test through the server's log
  await s.pool.destroy();
  return { waited, running };
}

export interface ServedDatasetsOptions {
  /** Worker threads of each dataset's pool. */
  workers: number;
  /** Datasets kept open at once. */
  maxDatasets: number;
  /** How prepared splits are read. */
  read: ServedReadOptions;
}

export class ServedDatasets {
  private readonly open = new Map<string, Promise<Served>>();
  private closed = false;

  constructor(private readonly options: ServedDatasetsOptions) {}

  /** The dataset, opened on first use (closing the least recently used idle one when as many as allowed are open). */
  async get(ref: DatasetRef): Promise<Served> {
    if (this.closed) throw new UserError('augment service: the server is shutting down', { code: 'busy' });
    const id = `${ref.split}\0${ref.dataset}`;
    let served = this.open.get(id);
    if (!served) {
      if (this.open.size >= this.options.maxDatasets) await this.closeLeastRecentlyUsedIdle();
      served = this.openServed(ref);
      this.open.set(id, served);
      served.catch(() => this.open.delete(id)); // a failed open is retried by the next call
    }
    const s = await served;
    s.usedAt = Date.now();
    return s;
  }

  /**
   * Stops every dataset's pool, once the tasks running on it have settled: how many tasks it waited for, and how many
   * were still running when the pools stopped (0).
   */
  async closeAll(): Promise<{ waited: number; running: number }> {
    this.closed = true;
    const open = [...this.open.values()];
    this.open.clear();
    const closed = await Promise.all(
      open.map(async (p) => {
        const s = await p.catch(() => null);
        return s ? destroyWhenIdle(s) : { waited: 0, running: 0 };
      }),
    );
    return {
      waited: closed.reduce((n, c) => n + c.waited, 0),
      running: closed.reduce((n, c) => n + c.running, 0),
    };
  }

  private async openServed(ref: DatasetRef): Promise<Served> {
    const data = await openServedSamples(ref, this.options.read);
    if (this.closed) throw new UserError('augment service: the server is shutting down', { code: 'busy' });
    return {
      data,
      classes: data.kind === 'memory' ? data.samples.classes : data.window.classes,
      size: data.kind === 'memory' ? data.samples.keys.length : data.window.size,
      pool: new BatchPool(data.kind === 'memory' ? data.samples.shared : null, this.options.workers),
      orders: new Map(),
      warmed: new Set(),
      spare: [],
      calls: 0,
      usedAt: Date.now(),
      running: new Set(),
    };
  }

  private async closeLeastRecentlyUsedIdle(): Promise<void> {
    let oldest: [string, Served] | null = null;
    for (const [id, p] of this.open) {
      const s = await p.catch(() => null);
      if (s && s.calls === 0 && (!oldest || s.usedAt < oldest[1].usedAt)) oldest = [id, s];
    }
    if (!oldest)
      throw new UserError(`augment service: already serving ${this.open.size} datasets, all busy`, { code: 'busy' });
    this.open.delete(oldest[0]);
    await destroyWhenIdle(oldest[1]);
  }
}
