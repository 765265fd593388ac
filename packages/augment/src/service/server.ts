// The augmentation server: the piscina pool behind a gRPC endpoint. It reads the samples itself (local or S3, through
// @catdog/dataset) and makes the batches a trainer names by (dataset, split, recipe, epoch, batch indices), exactly
// as the in-process stream would. A prepared split within the memory budget is read into memory once; a larger one
// is served from a window of shards (window.ts), so the dataset may be larger than the server's memory. Memory is
// also bounded per call: at most `workers` batches of a call are being made or waiting for the transport to take
// them, so a client that stops reading stalls its call, not the server.
import { createHash, timingSafeEqual } from 'node:crypto';
import { availableParallelism } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { formatError, UserError } from '@catdog/errors';
import { BatchPool } from '../batch-pool.js';
import { batchIndices, epochSampleOrder, stepsPerEpoch } from '../plan.js';
import {
  chooseReadMode,
  DEFAULT_MEMORY_BUDGET,
  isPreparedDataset,
  loadSamples,
  loadSplit,
  openDatasetSource,
  openShards,
  type LoadedSamples,
} from '../source.js';
import type { BatchResult, BatchTask, SharedSamples } from '../worker.js';
import { ShardWindow } from './window.js';
import { DEFAULT_WINDOW_SHARDS, type ShardStream } from '@catdog/dataset';
import {
  BadRequest,
  encodeFrame,
  encodeJson,
  HEALTH_CHECK_PATH,
  HEALTH_NOT_SERVING,
  HEALTH_SERVING,
  MAX_REQUEST_BYTES,
  parseBatchesRequest,
  parseDescribeRequest,
  SERVICE_PATH,
  type BatchRecipe,
  type BatchesRequest,
  type DatasetRef,
  type DescribeReply,
  type ServerLoad,
} from './protocol.js';

export interface AugmentServerOptions {
  /** Default 0 (any free port: read it back from server.port). */
  port?: number;
  /** Default '0.0.0.0'. */
  host?: string;
  /** Worker threads. Default os.availableParallelism(). */
  workers?: number;
  /** The shared secret every call must carry as `authorization: Bearer <token>`; null accepts any call. */
  token: string | null;
  /** PEM certificate chain and key: serve TLS. */
  tls?: { cert: Buffer; key: Buffer };
  /** Local cache for remote datasets' shards. */
  cacheDir?: string;
  /** Bytes the shard cache may hold (least recently used shards evicted). Default: no limit. */
  cacheLimit?: number;
  /**
   * A prepared split whose shards hold at most this many bytes is read into memory once; a larger one is served
   * from a window of shards (about two shuffle windows held). 0 always windows. Default 512 MiB, as in process.
   */
  memoryBudget?: number;
  /** Skip (and warn about) a missing or corrupt shard instead of failing the batches that need it. Default false. */
  skipCorrupt?: boolean;
  /** Datasets (dataset, split) kept open at once; opening another closes the least recently used idle one. Default 4. */
  maxDatasets?: number;
  /** Where refusals and failures are reported (never with the token). Default: stderr. */
  log?: (line: string) => void;
}

export interface AugmentServer {
  readonly host: string;
  readonly port: number;
  load(): ServerLoad;
  /** Stops accepting calls, lets running ones end (up to graceMs), then stops the pools. */
  close(graceMs?: number): Promise<void>;
}

/** How the server reads a prepared split's shards (cache, budget, skipCorrupt). */
export interface ServedReadOptions {
  cacheDir?: string;
  cacheLimit?: number;
  memoryBudget?: number;
  skipCorrupt?: boolean;
  onWarning?: (message: string) => void;
  log?: (line: string) => void;
}

/** A dataset as the server holds it: all samples in memory, or a prepared split behind a window of shards. */
export type ServedSamples =
  | { kind: 'memory'; samples: LoadedSamples; digest: string }
  | { kind: 'window'; window: ShardWindow; reader: ShardStream; digest: string };

/**
 * The server's one access to samples: a prepared split within the memory budget is read into memory through the
 * streaming reader (manifest order, so epochs follow the same order as the in-process stream), a larger one is
 * served from a window of shards; an image folder is read into memory as before. Requests name batches by index in
 * any order: the window path reads the shards a batch needs (and the next window's) on demand.
 */
export async function openServedSamples(ref: DatasetRef, o: ServedReadOptions = {}): Promise<ServedSamples> {
  if (!(await isPreparedDataset(ref.dataset))) {
    const samples = await loadSamples(await openDatasetSource(ref.dataset, ref.split));
    return { kind: 'memory', samples, digest: keysDigest(samples) };
  }
  const reader = await openShards(ref.dataset, ref.split, 0, false, o);
  // The manifest's record of the split: the same whichever way a server reads it.
  const digest = createHash('sha256')
    .update(JSON.stringify({ classes: reader.classes, shards: reader.shards }))
    .digest('hex');
  const bytes = reader.shards.reduce((n, s) => n + s.bytes, 0);
  const { mode, reason } = chooseReadMode(
    bytes,
    o.memoryBudget ?? DEFAULT_MEMORY_BUDGET,
    reader.shards.length,
    DEFAULT_WINDOW_SHARDS,
  );
  o.log?.(
    `augment serve: ${ref.dataset} ${ref.split}: ${mode === 'stream' ? reason.replace('streaming shards', 'serving from a window of shards') : reason}`,
  );
  if (mode === 'memory') return { kind: 'memory', samples: await loadSplit(reader), digest };
  return { kind: 'window', window: new ShardWindow(reader), reader, digest };
}

/** Which samples make one batch, as the pool takes them. */
interface BatchSamples {
  indices: number[];
  keys: string[];
  labels: ArrayLike<number>;
  encoded?: SharedSamples;
}

interface Served {
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

function keysDigest(samples: LoadedSamples): string {
  const h = createHash('sha256');
  samples.keys.forEach((k, i) => h.update(`${k}\t${samples.labels[i]}\n`));
  return h.digest('hex');
}

type Status = { code: grpc.status; details: string };

function statusOf(err: unknown): Status {
  if (err instanceof BadRequest) return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
  if (err instanceof UserError) {
    const notFound = err.code === 'not-found' || err.code === 'no-manifest' || err.code === 'no-such-bucket';
    return { code: notFound ? grpc.status.NOT_FOUND : grpc.status.FAILED_PRECONDITION, details: err.message };
  }
  return { code: grpc.status.INTERNAL, details: formatError(err) };
}

const raw = (b: Buffer) => b;

export async function startAugmentServer(options: AugmentServerOptions): Promise<AugmentServer> {
  const host = options.host ?? '0.0.0.0';
  const workers = options.workers ?? availableParallelism();
  if (!Number.isInteger(workers) || workers < 1)
    throw new RangeError(`workers must be a positive integer, got ${workers}`);
  const maxDatasets = options.maxDatasets ?? 4;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const expected = options.token === null ? null : createHash('sha256').update(options.token).digest();
  const datasets = new Map<string, Promise<Served>>();
  const rate: { t: number; images: number }[] = [];
  let queueDepth = 0;
  let sent = 0;
  let closing = false;

  const load = (): ServerLoad => {
    const now = performance.now();
    while (rate.length && now - rate[0].t > 10_000) rate.shift();
    const images = rate.reduce((n, r) => n + r.images, 0);
    const span = rate.length ? Math.max(1000, now - rate[0].t) : 1000;
    return {
      workers,
      queueDepth,
      imagesPerSecond: (images * 1000) / span,
      batches: sent,
      rss: process.memoryUsage.rss(),
    };
  };

  /** True when the call carries the token; else answers UNAUTHENTICATED. */
  const authorized = (call: { metadata: grpc.Metadata; getPeer(): string }, refuse: (s: Status) => void): boolean => {
    if (!expected) return true;
    const header = call.metadata.get('authorization')[0];
    const given = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : null;
    if (given !== null && timingSafeEqual(createHash('sha256').update(given).digest(), expected)) return true;
    log(`augment serve: refused a call from ${call.getPeer()}: ${given === null ? 'no token' : 'wrong token'}`);
    refuse({ code: grpc.status.UNAUTHENTICATED, details: 'missing or wrong token' });
    return false;
  };

  async function open(ref: DatasetRef): Promise<Served> {
    const id = `${ref.split}\0${ref.dataset}`;
    let served = datasets.get(id);
    if (!served) {
      if (datasets.size >= maxDatasets) await evictIdle();
      served = (async () => {
        const data = await openServedSamples(ref, {
          cacheDir: options.cacheDir,
          cacheLimit: options.cacheLimit,
          memoryBudget: options.memoryBudget,
          skipCorrupt: options.skipCorrupt,
          onWarning: (m) => log(`augment serve: warning: ${m}`),
          log,
        });
        const memory = data.kind === 'memory' ? data.samples : null;
        const pool = new BatchPool(memory?.shared ?? null, workers);
        return {
          data,
          classes: memory ? memory.classes : data.kind === 'window' ? data.window.classes : [],
          size: memory ? memory.keys.length : data.kind === 'window' ? data.window.size : 0,
          pool,
          orders: new Map(),
          warmed: new Set(),
          spare: [],
          calls: 0,
          usedAt: Date.now(),
        };
      })();
      datasets.set(id, served);
      served.catch(() => datasets.delete(id)); // a failed open is retried by the next call
    }
    const s = await served;
    s.usedAt = Date.now();
    return s;
  }

  async function evictIdle(): Promise<void> {
    let oldest: [string, Served] | null = null;
    for (const [id, p] of datasets) {
      const s = await p.catch(() => null);
      if (s && s.calls === 0 && (!oldest || s.usedAt < oldest[1].usedAt)) oldest = [id, s];
    }
    if (!oldest)
      throw new UserError(`augment service: already serving ${datasets.size} datasets, all busy`, { code: 'busy' });
    datasets.delete(oldest[0]);
    await oldest[1].pool.destroy();
  }

  function orderOf(s: Served, samples: LoadedSamples, r: BatchRecipe, epoch: number): number[] {
    const id = `${r.shuffle}/${r.seed}/${epoch}/${r.windowShards ?? ''}`;
    let order = s.orders.get(id);
    if (!order) {
      order = epochSampleOrder(samples, r.shuffle, r.seed, epoch, r.windowShards);
      if (s.orders.size >= 8) s.orders.delete(s.orders.keys().next().value!);
      s.orders.set(id, order);
    }
    return order;
  }

  const describe: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
    if (!authorized(call, (s) => callback(s, null))) return;
    (async () => {
      const request = parseDescribeRequest(call.request);
      const s = await open(request);
      if (request.warmup) {
        const r = request.warmup;
        const id = JSON.stringify(r);
        if (!s.warmed.has(id)) {
          await s.pool.warmUp({ ...r });
          s.warmed.add(id);
        }
      }
      const reply: DescribeReply = {
        classes: s.classes,
        size: s.size,
        digest: s.data.digest,
        workers,
      };
      return encodeJson(reply);
    })().then(
      (reply) => callback(null, reply),
      (err: unknown) => callback(statusOf(err), null),
    );
  };

  const status: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
    if (!authorized(call, (s) => callback(s, null))) return;
    callback(null, encodeJson(load()));
  };

  const batches: grpc.handleServerStreamingCall<Buffer, Buffer> = (call) => {
    const refuse = (st: Status) => call.emit('error', st);
    if (!authorized(call, refuse)) return;
    let cancelled = false;
    let wake: (() => void) | null = null;
    /** Resolves stream()'s wait: a write was flushed, or the call was cancelled. */
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    call.on('cancelled', () => {
      cancelled = true;
      notify();
    });
    (async () => {
      const request = parseBatchesRequest(call.request);
      const s = await open(request);
      const steps = stepsPerEpoch(s.size, request.batchSize, false);
      const bad = request.batches.find((b) => b >= steps);
      if (bad !== undefined) throw new BadRequest(`batch ${bad} is past the epoch's last batch (${steps - 1})`);
      s.calls++;
      let unsent = request.batches.length;
      queueDepth += unsent;
      try {
        const made: Promise<{ batch: BatchSamples; res: BatchResult }>[] = [];
        let launched = 0;
        let unflushed = 0;
        // At most `workers` batches of this call are being made or waiting for the transport to take them.
        const launch = () => {
          while (!cancelled && launched < request.batches.length && made.length + unflushed < workers) {
            const index = request.batches[launched++];
            const p = (async () => {
              const batch = await samplesOf(s, request, index);
              const res = await s.pool.run(
                taskOf(request, batch),
                s.spare.pop(),
                `batch ${index} of epoch ${request.epoch}`,
              );
              return { batch, res };
            })();
            p.catch(() => {}); // surfaced when awaited below
            made.push(p);
          }
        };
        for (const index of request.batches) {
          launch();
          while (made.length === 0 && !cancelled) {
            await new Promise<void>((resolve) => (wake = resolve));
            launch();
          }
          if (cancelled) return;
          const { batch, res } = await made.shift()!;
          if (cancelled) return;
          const frame = frameOf(request, index, batch, res);
          if (res.memory && s.spare.length < 2 * workers) s.spare.push(res.memory); // the frame holds a copy
          unflushed++;
          call.write(frame, () => {
            unflushed--;
            notify();
          });
          unsent--;
          queueDepth--;
          sent++;
          rate.push({ t: performance.now(), images: res.kept.length });
        }
      } finally {
        s.calls--;
        queueDepth -= unsent;
      }
    })().then(
      () => {
        if (!cancelled) call.end();
      },
      (err: unknown) => {
        if (cancelled) return;
        const st = statusOf(err);
        if (st.code === grpc.status.INTERNAL) log(`augment serve: ${st.details}`);
        refuse(st);
      },
    );
  };

  /** The samples of batch `index` of the request's epoch: indices into the split in memory, or their own bytes. */
  async function samplesOf(s: Served, r: BatchesRequest, index: number): Promise<BatchSamples> {
    if (s.data.kind === 'window') {
      const b = await s.data.window.batch(r, r.epoch, index);
      return { indices: b.keys.map((_, i) => i), keys: b.keys, labels: b.labels, encoded: b.encoded };
    }
    const samples = s.data.samples;
    const indices = batchIndices(orderOf(s, samples, r, r.epoch), index, r.batchSize, samples.missing);
    return { indices, keys: indices.map((i) => samples.keys[i]), labels: indices.map((i) => samples.labels[i]) };
  }

  function taskOf(r: BatchesRequest, b: BatchSamples): BatchTask {
    return {
      epoch: r.epoch,
      indices: b.indices,
      keys: b.keys,
      height: r.height,
      width: r.width,
      augment: r.augment,
      seed: r.seed,
      dtype: r.dtype,
      rescale: r.rescale,
      interpolation: r.interpolation,
      jpegDecoder: r.jpegDecoder,
      ...(b.encoded ? { encoded: b.encoded } : {}),
    };
  }

  function frameOf(r: BatchesRequest, index: number, b: BatchSamples, res: BatchResult): Buffer {
    const elements = res.kept.length * r.height * r.width * 3;
    return encodeFrame(
      {
        epoch: r.epoch,
        index,
        height: r.height,
        width: r.width,
        dtype: r.dtype,
        keys: res.kept.map((p) => b.keys[p]),
        labels: res.kept.map((p) => b.labels[p]),
        skipped: res.skipped.map((x) => ({ key: b.keys[x.position], reason: x.reason })),
        workerMs: res.workerMs,
        load: load(),
      },
      new Uint8Array(res.xs, 0, elements * (r.dtype === 'uint8' ? 1 : 4)),
    );
  }

  const health: grpc.handleUnaryCall<Buffer, Buffer> = (_call, callback) =>
    callback(null, closing ? HEALTH_NOT_SERVING : HEALTH_SERVING);

  const method = (name: string, responseStream: boolean) => ({
    path: `${SERVICE_PATH}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  });
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_concurrent_streams': 256,
    // Clients ping every 20 s to notice a dead server; allow it.
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
  });
  server.addService(
    {
      Describe: method('Describe', false),
      Batches: method('Batches', true),
      Status: method('Status', false),
    } as grpc.ServiceDefinition,
    { Describe: describe, Batches: batches, Status: status } as grpc.UntypedServiceImplementation,
  );
  server.addService(
    { Check: { ...method('Check', false), path: HEALTH_CHECK_PATH } } as grpc.ServiceDefinition,
    { Check: health } as grpc.UntypedServiceImplementation,
  );
  const credentials = options.tls
    ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: options.tls.cert, private_key: options.tls.key }], false)
    : grpc.ServerCredentials.createInsecure();
  const bindHost = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${bindHost}:${options.port ?? 0}`, credentials, (err, bound) => {
      if (err)
        reject(
          new UserError(`augment serve: cannot listen on ${bindHost}:${options.port ?? 0}: ${err.message}`, {
            code: 'unreachable',
          }),
        );
      else resolve(bound);
    });
  });

  return {
    host,
    port,
    load,
    async close(graceMs = 5000) {
      closing = true;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      for (const p of datasets.values()) {
        const s = await p.catch(() => null);
        await s?.pool.destroy();
      }
      datasets.clear();
    },
  };
}
