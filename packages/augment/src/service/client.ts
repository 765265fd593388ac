// The trainer's side of the augmentation service: a BatchStream whose batches are made on `augment serve` servers.
// The client owns the plan: it numbers the run's batches (epoch × steps + index), hands each one to the least
// loaded live server as one Batches call, and delivers them in that order, with at most `prefetch` batches asked
// for and not yet consumed. A server that fails has its outstanding batches handed to the others; one that comes
// back (or appears in DNS) gets work again. Every batch is a pure function of (dataset, recipe, epoch, index), so the
// pixels do not depend on which server made them.
import { performance } from 'node:perf_hooks';
import { isIP } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { UserError } from '@catdog/errors';
import type { Batch, BatchStream, BatchStreamOptions, ServerStats, StreamStats } from '../batch-stream.js';
import { baseEpoch, DeliveryLog, iterate, startPoint, type ResolvedStreamOptions } from '../delivery.js';
import { stepsPerEpoch } from '../plan.js';
import { BatchChannel, BufferPool, type BatchCall, type CallError } from './batch-channel.js';
import {
  encodeJson,
  MAX_HEADER_BYTES,
  MAX_REQUEST_BYTES,
  SERVICE_PATH,
  type BatchRecipe,
  type BatchesRequest,
  type DatasetRef,
  type DescribeReply,
  type Frame,
  type ServerLoad,
} from './protocol.js';
import {
  parseServiceAddresses,
  resolveServiceAddress,
  type AugmentServiceOptions,
  type ServiceAddress,
} from './addresses.js';

const raw = (b: Buffer) => b;
/** A batch that failed on this many servers fails the stream. */
const MAX_ATTEMPTS = 4;
const DNS_REFRESH_MS = 10_000;
/** Status codes that mean the request itself is wrong: the same on every server, so the stream fails. */
const FATAL = new Set([
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.OUT_OF_RANGE,
]);

class Endpoint {
  state: 'probing' | 'up' | 'down' = 'probing';
  inflight = 0;
  workers = 0;
  failures = 0;
  batches = 0;
  bytes = 0;
  load: ServerLoad | null = null;
  timer: NodeJS.Timeout | null = null;

  constructor(
    readonly target: string,
    /** Describe (grpc-js) */
    readonly client: grpc.Client,
    /** Batches (node:http2, batch-channel.ts) */
    readonly channel: BatchChannel,
  ) {}

  get capacity(): number {
    return 2 * Math.max(1, this.workers);
  }
}

interface Received {
  frame: Frame;
  bytes: number;
}

/** createBatchStream with `augmentService`: connects to the servers and asks each to open the dataset. */
export async function createRemoteBatchStream(
  options: BatchStreamOptions,
  o: ResolvedStreamOptions,
): Promise<BatchStream> {
  if (typeof options.source !== 'string') {
    throw new RangeError(
      'augmentService: source must be a dataset URL the servers can read (dataset dir, s3:// prefix or image folder)',
    );
  }
  const recipe: BatchRecipe = {
    seed: o.seed,
    shuffle: o.shuffle,
    batchSize: o.batchSize,
    height: o.height,
    width: o.width,
    augment: o.augment,
    dtype: o.dtype,
    rescale: o.rescale,
    interpolation: o.interpolation,
    jpegDecoder: o.jpegDecoder,
    ...(options.windowShards === undefined ? {} : { windowShards: options.windowShards }),
  };
  // A local path means the same path on the servers (shared disk); URLs pass as they are.
  const dataset = /^[a-z][a-z0-9+.-]*:\/\//i.test(options.source) ? options.source : resolvePath(options.source);
  const stream = new RemoteBatchStream(
    options.augmentService!,
    { dataset, split: options.split ?? 'train' },
    recipe,
    { ...o, prefetch: options.prefetch },
    options,
  );
  try {
    await stream.start();
  } catch (err) {
    await stream.close();
    throw err;
  }
  return stream;
}

interface Plan extends ResolvedStreamOptions {
  prefetch?: number;
}

class RemoteBatchStream implements BatchStream {
  classes: string[] = [];
  size = 0;
  stepsPerEpoch = 0;
  readonly batchSize: number;
  readonly seed: number;
  private readonly addresses: ServiceAddress[];
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;
  private digest = '';
  private readonly calls = new Set<BatchCall>();
  /** pixel buffers of released batches, reused by the next ones */
  private readonly pool = new BufferPool(8);
  private readonly frameBytes: number;
  /** batch numbers (epoch × steps + index) handed back by failed servers, smallest first */
  private readonly unassigned: number[] = [];
  private readonly attempts = new Map<number, number>();
  private readonly received = new Map<number, Received>();
  private waiting: { seq: number; resolve: () => void } | null = null;
  private nextSeq = 0;
  private delivered = 0;
  private endSeq = Infinity;
  private fatal: Error | null = null;
  /** why a server could not open the dataset at start, reported if none could */
  private startError: Error | null = null;
  private reassigned = 0;
  private consuming = false;
  private closed = false;
  private downSince: number | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private dnsTimer: NodeJS.Timeout | null = null;
  private readonly log: DeliveryLog;

  constructor(
    private readonly service: AugmentServiceOptions,
    private readonly ref: DatasetRef,
    private readonly recipe: BatchRecipe,
    private readonly plan: Plan,
    private readonly options: BatchStreamOptions,
  ) {
    this.batchSize = recipe.batchSize;
    this.seed = recipe.seed;
    this.log = new DeliveryLog(plan.onEpochEnd);
    this.addresses = parseServiceAddresses(service.addresses);
    const tls = service.tls;
    this.credentials = tls
      ? grpc.credentials.createSsl(typeof tls === 'object' && tls.ca ? Buffer.from(tls.ca) : null)
      : grpc.credentials.createInsecure();
    const frameBytes =
      8 + MAX_HEADER_BYTES + recipe.batchSize * recipe.height * recipe.width * 3 * (recipe.dtype === 'uint8' ? 1 : 4);
    this.frameBytes = frameBytes;
    this.channelOptions = {
      'grpc.max_receive_message_length': frameBytes,
      'grpc.max_send_message_length': MAX_REQUEST_BYTES,
      // HTTP/2 windows (per stream and per connection) of one batch instead of 64 KiB: a batch flows without a round
      // trip per 64 KiB, and at most a batch per server is in transit beyond what this client has read.
      'grpc-node.flow_control_window': Math.min(2 ** 31 - 1, frameBytes),
      'grpc.keepalive_time_ms': 20_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.initial_reconnect_backoff_ms': 500,
      'grpc.max_reconnect_backoff_ms': 5_000,
      'grpc.enable_retries': 0,
    };
  }

  get workers(): number {
    let n = 0;
    for (const e of this.endpoints.values()) if (e.state === 'up') n += e.workers;
    return n;
  }

  private get prefetch(): number {
    return this.plan.prefetch ?? Math.max(2, 2 * this.workers);
  }

  /** Finds the servers and asks each to open the dataset; at least one must answer. */
  async start(): Promise<void> {
    await this.refreshAddresses(true);
    const up = [...this.endpoints.values()].filter((e) => e.state === 'up');
    if (up.length === 0) {
      throw (
        this.fatal ??
        this.startError ??
        new UserError(
          `augment service: no server answered at ${this.addresses.map((a) => `${a.host}:${a.port}`).join(',')}`,
          { code: 'unreachable' },
        )
      );
    }
    const steps = stepsPerEpoch(this.size, this.batchSize, this.plan.dropRemainder);
    if (steps === 0)
      throw new RangeError(`dropRemainder with batchSize ${this.batchSize} leaves no batch from ${this.size} samples`);
    this.stepsPerEpoch = steps;
    this.endSeq = this.plan.epochs === Infinity ? Infinity : this.plan.epochs * steps;
    // Batch numbers count from the base epoch's first batch; a mid-epoch start skips to its batch.
    const [epoch, index] = startPoint(this.options, this.plan, steps, this.size);
    this.plan.initialEpoch = baseEpoch(this.options, this.plan);
    this.nextSeq = this.delivered = (epoch - this.plan.initialEpoch) * steps + index;
    if (this.addresses.some((a) => !isIP(a.host))) {
      this.dnsTimer = setInterval(() => void this.refreshAddresses(false), this.service.refreshMs ?? DNS_REFRESH_MS);
      this.dnsTimer.unref();
    }
  }

  private metadata(): grpc.Metadata {
    const m = new grpc.Metadata();
    if (this.service.token) m.set('authorization', `Bearer ${this.service.token}`);
    return m;
  }

  private async refreshAddresses(first: boolean): Promise<void> {
    const targets: { target: string; host: string }[] = [];
    for (const a of this.addresses) {
      try {
        for (const target of await resolveServiceAddress(a, this.service.resolve))
          targets.push({ target, host: a.host });
      } catch (err) {
        if (first)
          throw new UserError(
            `augment service: cannot resolve ${a.host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
            { code: 'unreachable' },
          );
      }
    }
    const added: Endpoint[] = [];
    for (const { target, host } of targets) {
      if (this.endpoints.has(target) || this.closed) continue;
      const client = new grpc.Client(target, this.credentials, {
        ...this.channelOptions,
        ...(this.service.tls ? { 'grpc.ssl_target_name_override': host, 'grpc.default_authority': host } : {}),
      });
      const channel = new BatchChannel({
        target,
        host,
        tls: this.service.tls,
        maxMessageBytes: this.frameBytes,
        // Room for a few batches in transit at once (a server has up to 2 × its workers calls of this client open);
        // the client reads every byte as it comes, so the window bounds the kernel's buffers, not this process.
        connectionWindow: this.frameBytes * 4,
        pool: this.pool,
      });
      const e = new Endpoint(target, client, channel);
      this.endpoints.set(target, e);
      added.push(e);
    }
    await Promise.all(added.map((e) => this.probe(e, first)));
  }

  private describe(e: Endpoint, warmup: boolean): Promise<DescribeReply> {
    const request = warmup ? { ...this.ref, warmup: this.recipe } : this.ref;
    return new Promise((resolve, reject) => {
      e.client.makeUnaryRequest(
        `${SERVICE_PATH}/Describe`,
        raw,
        raw,
        encodeJson(request),
        this.metadata(),
        { deadline: Date.now() + 10 * 60_000 },
        (err, reply) => (err ? reject(err) : resolve(JSON.parse(reply!.toString('utf8')) as DescribeReply)),
      );
    });
  }

  /** Asks a new or failed server to describe the dataset; it gets work once it answers with the same samples. */
  private async probe(e: Endpoint, first: boolean): Promise<void> {
    e.timer = null;
    if (this.closed) return;
    try {
      const reply = await this.describe(e, false);
      if (this.closed) return;
      if (!this.digest) {
        this.digest = reply.digest;
        this.classes = reply.classes;
        this.size = reply.size;
      } else if (reply.digest !== this.digest) {
        const message = `augment service: ${e.target} serves different samples for ${this.ref.dataset} (${this.ref.split}) than the other servers`;
        if (first) throw new UserError(message, { code: 'bad-dataset' });
        process.emitWarning(message);
        this.markDown(e, 60_000);
        return;
      }
      e.workers = reply.workers;
      e.state = 'up';
      e.failures = 0;
      this.downSince = null;
      this.pump();
    } catch (err) {
      const status = (err as grpc.ServiceError).code;
      if (status !== undefined && FATAL.has(status)) {
        this.fail(
          new UserError(`augment service ${e.target}: ${(err as grpc.ServiceError).details}`, {
            code: status === grpc.status.UNAUTHENTICATED ? 'access-denied' : 'bad-request',
          }),
        );
        return;
      }
      if (err instanceof UserError) {
        this.fail(err);
        return;
      }
      if (status === grpc.status.NOT_FOUND || status === grpc.status.FAILED_PRECONDITION) {
        // The dataset is missing or unreadable there: the same on every server of one deployment, most likely.
        if (first)
          this.startError ??= new UserError(`augment service ${e.target}: ${(err as grpc.ServiceError).details}`, {
            code: 'bad-source',
          });
      }
      this.markDown(e);
    }
  }

  private markDown(e: Endpoint, delayMs?: number): void {
    if (this.closed) return;
    // One failure per outage, however many of its calls fail with it; probes that fail add one each.
    if (e.state !== 'down' || e.timer === null) e.failures++;
    e.state = 'down';
    if (!e.timer) {
      e.timer = setTimeout(
        () => void this.probe(e, false),
        delayMs ?? Math.min(5_000, 250 * 2 ** Math.min(e.failures, 5)),
      );
      e.timer.unref();
    }
    this.armWatchdog();
  }

  /** Fails the stream when no server has been reachable for unavailableTimeoutMs while batches are owed. */
  private armWatchdog(): void {
    if (this.watchdog || this.closed) return;
    const limit = this.service.unavailableTimeoutMs ?? 60_000;
    this.watchdog = setInterval(() => {
      const anyUp = [...this.endpoints.values()].some((e) => e.state === 'up');
      if (anyUp) {
        this.downSince = null;
        return;
      }
      this.downSince ??= Date.now();
      if (Date.now() - this.downSince > limit && this.delivered < this.endSeq) {
        this.fail(
          new UserError(
            `augment service: no server reachable for ${(limit / 1000).toFixed(0)} s (${[...this.endpoints.keys()].join(', ')})`,
            { code: 'unreachable' },
          ),
        );
      }
    }, 500);
    this.watchdog.unref();
  }

  private fail(err: Error): void {
    this.fatal ??= err;
    this.wake();
  }

  private wake(): void {
    const w = this.waiting;
    if (w && (this.received.has(w.seq) || this.fatal || this.closed)) {
      this.waiting = null;
      w.resolve();
    }
  }

  /** Hands out batches while fewer than `prefetch` are owed and a live server has room. */
  private pump(): void {
    // Nothing is asked for before the first next(), as in process (a benchmark's warm-up is not timed work).
    while (!this.closed && !this.fatal && this.consuming) {
      const retry = this.unassigned.length > 0;
      if (!retry && !(this.nextSeq < this.endSeq && this.nextSeq - this.delivered < this.prefetch)) return;
      let best: Endpoint | null = null;
      for (const e of this.endpoints.values()) {
        if (
          e.state === 'up' &&
          e.inflight < e.capacity &&
          (!best || e.inflight / e.capacity < best.inflight / best.capacity)
        )
          best = e;
      }
      if (!best) return;
      const seq = retry ? this.unassigned.shift()! : this.nextSeq++;
      this.request(best, seq);
    }
  }

  private request(e: Endpoint, seq: number): void {
    const steps = this.stepsPerEpoch;
    const epoch = this.plan.initialEpoch + Math.floor(seq / steps);
    const index = seq % steps;
    const request: BatchesRequest = { ...this.ref, ...this.recipe, epoch, batches: [index] };
    e.inflight++;
    let done = false;
    const finish = () => {
      if (done) return false;
      done = true;
      e.inflight--;
      this.calls.delete(call);
      return true;
    };
    const call = e.channel.batches(`${SERVICE_PATH}/Batches`, encodeJson(request), this.service.token, {
      frame: (frame, bytes) => {
        const t = performance.now();
        try {
          if (frame.header.epoch !== epoch || frame.header.index !== index)
            throw new Error(
              `augment service ${e.target}: sent batch ${frame.header.index} of epoch ${frame.header.epoch}, asked for ${index} of ${epoch}`,
            );
          e.batches++;
          e.bytes += bytes;
          e.load = frame.header.load;
          e.workers = frame.header.load.workers;
          // A batch handed to a second server after its first call failed late may arrive twice: keep one.
          if (seq >= this.delivered && !this.received.has(seq) && !this.closed)
            this.received.set(seq, { frame, bytes });
          else this.pool.give(frame.xs.buffer);
        } catch (err) {
          this.pool.give(frame.xs.buffer);
          this.fail(err as Error);
        }
        this.log.addMainMs(performance.now() - t);
        this.wake();
      },
      error: (err: CallError) => {
        if (!finish() || this.closed) return;
        if (FATAL.has(err.code)) {
          this.fail(
            new UserError(`augment service ${e.target}: ${err.details}`, {
              code: err.code === grpc.status.UNAUTHENTICATED ? 'access-denied' : 'bad-request',
            }),
          );
          return;
        }
        // The server died, restarted, or failed this batch: hand the batch to another one (unless it arrived first).
        if (this.received.has(seq) || seq < this.delivered) {
          this.markDown(e);
          this.pump();
          return;
        }
        const attempts = (this.attempts.get(seq) ?? 0) + 1;
        this.attempts.set(seq, attempts);
        if (attempts >= MAX_ATTEMPTS) {
          this.fail(
            new UserError(
              `augment service: batch ${index} of epoch ${epoch} failed on ${attempts} servers, last ${e.target}: ${err.details}`,
              { code: 'unreachable' },
            ),
          );
          return;
        }
        this.unassigned.push(seq);
        this.unassigned.sort((a, b) => a - b);
        this.reassigned++;
        this.markDown(e);
        this.pump();
      },
      end: () => {
        if (!finish()) return;
        if (!this.received.has(seq) && !this.closed && seq >= this.delivered) {
          this.unassigned.push(seq);
          this.unassigned.sort((a, b) => a - b);
        }
        this.pump();
      },
    });
    if (!done) this.calls.add(call);
  }

  [Symbol.asyncIterator](): AsyncIterator<Batch, undefined> {
    return iterate(this);
  }

  async next(): Promise<IteratorResult<Batch, undefined>> {
    if (this.closed || this.delivered >= this.endSeq) {
      await this.close();
      return { done: true, value: undefined };
    }
    this.consuming = true;
    this.pump();
    const seq = this.delivered;
    while (!this.received.has(seq) && !this.fatal && !this.closed) {
      await new Promise<void>((resolve) => {
        this.waiting = { seq, resolve };
        this.wake();
      });
    }
    if (this.fatal) {
      const err = this.fatal;
      await this.close();
      throw err;
    }
    if (this.closed) return { done: true, value: undefined };
    const t = performance.now();
    const { frame } = this.received.get(seq)!;
    this.received.delete(seq);
    this.attempts.delete(seq);
    this.delivered++;
    this.pump();
    const h = frame.header;
    const n = h.keys.length;
    const skipped = h.skipped.map((s) => ({ key: s.key, epoch: h.epoch, reason: s.reason }));
    let released = false;
    const batch: Batch = {
      xs: frame.xs,
      ys: Float32Array.from(h.labels),
      keys: h.keys,
      shape: [n, h.height, h.width, 3],
      epoch: h.epoch,
      index: h.index,
      skipped,
      release: () => {
        // the next batch is received into it (once: a buffer given twice would hold two batches)
        if (!released) this.pool.give(frame.xs.buffer);
        released = true;
      },
    };
    this.log.record(batch, h.index === this.stepsPerEpoch - 1, h.workerMs, performance.now() - t);
    return { done: false, value: batch };
  }

  /** Warms every live server's workers up for this stream's recipe. */
  async ready(): Promise<void> {
    await Promise.all(
      [...this.endpoints.values()]
        .filter((e) => e.state === 'up')
        .map((e) => this.describe(e, true).catch(() => this.markDown(e))),
    );
  }

  stats(): StreamStats {
    const servers: ServerStats[] = [...this.endpoints.values()].map((e) => ({
      address: e.target,
      state: e.state === 'up' ? 'up' : 'down',
      workers: e.workers,
      imagesPerSecond: e.load?.imagesPerSecond ?? 0,
      queueDepth: e.load?.queueDepth ?? 0,
      batches: e.batches,
      bytes: e.bytes,
    }));
    return this.log.stats(this.reassigned, servers);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake();
    for (const call of this.calls) call.cancel();
    this.calls.clear();
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.dnsTimer) clearInterval(this.dnsTimer);
    for (const e of this.endpoints.values()) {
      if (e.timer) clearTimeout(e.timer);
      e.client.close();
      e.channel.close();
    }
    this.received.clear();
  }
}
