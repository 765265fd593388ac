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

  constructor(private readonly options: ServedDatasetsOptions) {}

  /** The dataset, opened on first use (closing the least recently used idle one when as many as allowed are open). */
  async get(ref: DatasetRef): Promise<Served> {
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

  /** Stops every dataset's pool. */
  async closeAll(): Promise<void> {
    for (const p of this.open.values()) {
      const s = await p.catch(() => null);
      await s?.pool.destroy();
    }
    this.open.clear();
  }

  private async openServed(ref: DatasetRef): Promise<Served> {
    const data = await openServedSamples(ref, this.options.read);
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
    await oldest[1].pool.destroy();
  }
}
