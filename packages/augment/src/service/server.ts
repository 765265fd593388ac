// The augmentation server: the piscina pool behind a gRPC endpoint. It reads the samples itself (local or S3, through
// @catdog/dataset) and makes the batches a trainer names by (dataset, split, recipe, epoch, batch indices), exactly
// as the in-process stream would. Memory is bounded per call: at most `workers` batches of a call are being made or
// waiting for the transport to take them, so a client that stops reading stalls its call, not the server.
import { createHash, timingSafeEqual } from 'node:crypto';
import { availableParallelism } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { formatError, UserError } from '@catdog/errors';
import { BatchPool } from '../batch-pool.js';
import { batchIndices, epochSampleOrder, stepsPerEpoch } from '../plan.js';
import {
  DEFAULT_MAX_SOURCE_BYTES,
  isPreparedDataset,
  loadSamples,
  loadSplit,
  openDatasetSource,
  openShards,
  type LoadedSamples,
} from '../source.js';
import type { BatchResult, BatchTask } from '../worker.js';
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

/**
 * The server's one access to samples: a prepared split is read into memory through the streaming reader (manifest
 * order, so epochs follow the same order as the in-process stream), an image folder as before. Requests name
 * batches by index in any order, so the server holds the split (up to 2 GiB of encoded bytes) rather than a window.
 */
export async function loadServedSamples(
  ref: DatasetRef,
  cache: { cacheDir?: string; cacheLimit?: number } = {},
): Promise<LoadedSamples> {
  if (!(await isPreparedDataset(ref.dataset))) return loadSamples(await openDatasetSource(ref.dataset, ref.split));
  const reader = await openShards(ref.dataset, ref.split, 0, false, cache);
  const bytes = reader.shards.reduce((n, s) => n + s.bytes, 0);
  if (bytes > DEFAULT_MAX_SOURCE_BYTES) {
    throw new UserError(
      `${reader.url}: split ${ref.split} holds ${(bytes / 1024 ** 3).toFixed(1)} GiB of shards, more than the augmentation server reads ` +
        `into memory (${DEFAULT_MAX_SOURCE_BYTES / 1024 ** 3} GiB): augment it in process (createBatchStream streams it)`,
      { code: 'too-large' },
    );
  }
  return loadSplit(reader);
}

interface Served {
  samples: LoadedSamples;
  pool: BatchPool;
  digest: string;
  /** epoch orders by `${shuffle}/${seed}/${epoch}`, a few kept */
  orders: Map<string, number[]>;
  warmed: Set<string>;
  /** released batch memories, reused by later batches */
  spare: WebAssembly.Memory[];
  calls: number;
  usedAt: number;
}

function digestOf(samples: LoadedSamples): string {
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
        const samples = await loadServedSamples(ref, { cacheDir: options.cacheDir, cacheLimit: options.cacheLimit });
        const pool = new BatchPool(samples.shared, workers);
        return {
          samples,
          pool,
          digest: digestOf(samples),
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

  function orderOf(s: Served, r: BatchRecipe, epoch: number): number[] {
    const id = `${r.shuffle}/${r.seed}/${epoch}/${r.windowShards ?? ''}`;
    let order = s.orders.get(id);
    if (!order) {
      order = epochSampleOrder(s.samples, r.shuffle, r.seed, epoch, r.windowShards);
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
        classes: s.samples.classes,
        size: s.samples.keys.length,
        digest: s.digest,
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
      const steps = stepsPerEpoch(s.samples.keys.length, request.batchSize, false);
      const bad = request.batches.find((b) => b >= steps);
      if (bad !== undefined) throw new BadRequest(`batch ${bad} is past the epoch's last batch (${steps - 1})`);
      s.calls++;
      let unsent = request.batches.length;
      queueDepth += unsent;
      try {
        const order = orderOf(s, request, request.epoch);
        const made: Promise<BatchResult>[] = [];
        let launched = 0;
        let unflushed = 0;
        // At most `workers` batches of this call are being made or waiting for the transport to take them.
        const launch = () => {
          while (!cancelled && launched < request.batches.length && made.length + unflushed < workers) {
            const index = request.batches[launched++];
            const p = s.pool.run(
              taskOf(s, request, order, index),
              s.spare.pop(),
              `batch ${index} of epoch ${request.epoch}`,
            );
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
          const res = await made.shift()!;
          if (cancelled) return;
          const frame = frameOf(s, request, order, index, res);
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

  function taskOf(s: Served, r: BatchesRequest, order: number[], index: number): BatchTask {
    const indices = batchIndices(order, index, r.batchSize, s.samples.missing);
    return {
      epoch: r.epoch,
      indices,
      keys: indices.map((i) => s.samples.keys[i]),
      height: r.height,
      width: r.width,
      augment: r.augment,
      seed: r.seed,
      dtype: r.dtype,
      rescale: r.rescale,
      interpolation: r.interpolation,
      jpegDecoder: r.jpegDecoder,
    };
  }

  function frameOf(s: Served, r: BatchesRequest, order: number[], index: number, res: BatchResult): Buffer {
    const indices = batchIndices(order, index, r.batchSize, s.samples.missing);
    const elements = res.kept.length * r.height * r.width * 3;
    return encodeFrame(
      {
        epoch: r.epoch,
        index,
        height: r.height,
        width: r.width,
        dtype: r.dtype,
        keys: res.kept.map((p) => s.samples.keys[indices[p]]),
        labels: res.kept.map((p) => s.samples.labels[indices[p]]),
        skipped: res.skipped.map((x) => ({ key: s.samples.keys[indices[x.position]], reason: x.reason })),
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
