// The server's load as Status and every frame report it: queued batches, batches sent, images per second.
import type { ServerLoad } from './protocol.js';

/** How far back imagesPerSecond looks. */
const RATE_SPAN_MS = 10_000;

export class LoadMeter {
  /** batches accepted and not yet sent */
  private queueDepth = 0;
  private sent = 0;
  /** batches on the pool now */
  making = 0;
  /** calls waiting for their client to take what was written before making more */
  waitingOnClients = 0;
  /** images per sent batch, the last RATE_SPAN_MS of them */
  private readonly recent: { t: number; images: number }[] = [];

  constructor(private readonly workers: number) {}

  /** Batches a call accepted. */
  queued(batches: number): void {
    this.queueDepth += batches;
  }

  /** Accepted batches that will not be sent (the call ended first). */
  dropped(batches: number): void {
    this.queueDepth -= batches;
  }

  /** One accepted batch sent, with its images. */
  sentBatch(images: number): void {
    this.queueDepth--;
    this.sent++;
    this.recent.push({ t: performance.now(), images });
  }

  load(): ServerLoad {
    const now = performance.now();
    while (this.recent.length && now - this.recent[0].t > RATE_SPAN_MS) this.recent.shift();
    const images = this.recent.reduce((n, r) => n + r.images, 0);
    const span = this.recent.length ? Math.max(1000, now - this.recent[0].t) : 1000;
    return {
      workers: this.workers,
      queueDepth: this.queueDepth,
      making: this.making,
      waitingOnClients: this.waitingOnClients,
      imagesPerSecond: (images * 1000) / span,
      batches: this.sent,
      rss: process.memoryUsage.rss(),
    };
  }
}
