// The augmentation server: the piscina pool behind a gRPC endpoint. It reads the samples itself (local or S3, through
// @catdog/dataset) and makes the batches a trainer names by (dataset, split, recipe, epoch, batch indices), exactly
// as the in-process stream would. A prepared split within the memory budget is read into memory once; a larger one
// is served from a window of shards (window.ts), so the dataset may be larger than the server's memory. Memory is
// also bounded per call (batches.ts), so a client that stops reading stalls its call, not the server.
// This file starts and stops the server; the pieces: grpc-server.ts (gRPC on node:http2), auth.ts (token), served-samples.ts (how a dataset is read),
// datasets.ts (the open datasets and their pools), handlers.ts (Describe, Status, health), batches.ts (Batches),
// batch-frames.ts (one batch: made, framed), load-meter.ts (the load Status and every frame report).
import { availableParallelism } from 'node:os';
import { UserError } from '@catdog/errors';
import { tokenGuard } from './auth.js';
import { batches } from './batches.js';
import { failureOf } from './call-status.js';
import { ServedDatasets } from './datasets.js';
import { GrpcServer, type Method } from './grpc-server.js';
import { describe, health, type ServiceContext, status } from './handlers.js';
import { LoadMeter } from './load-meter.js';
import { HEALTH_CHECK_PATH, MAX_REQUEST_BYTES, SERVICE_PATH, type ServerLoad } from './protocol.js';

export { openServedSamples, type ServedReadOptions, type ServedSamples } from './served-samples.js';

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

export async function startAugmentServer(options: AugmentServerOptions): Promise<AugmentServer> {
  const host = options.host ?? '0.0.0.0';
  const workers = options.workers ?? availableParallelism();
  if (!Number.isInteger(workers) || workers < 1)
    throw new RangeError(`workers must be a positive integer, got ${workers}`);
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const service: ServiceContext = {
    datasets: new ServedDatasets({
      workers,
      maxDatasets: options.maxDatasets ?? 4,
      read: {
        cacheDir: options.cacheDir,
        cacheLimit: options.cacheLimit,
        memoryBudget: options.memoryBudget,
        skipCorrupt: options.skipCorrupt,
        onWarning: (m) => log(`augment serve: warning: ${m}`),
        log,
      },
    }),
    meter: new LoadMeter(workers),
    authorize: tokenGuard(options.token, log),
    workers,
    log,
  };
  let closing = false;
  const methods = new Map<string, Method>([
    [`${SERVICE_PATH}/Describe`, { kind: 'unary', handle: (call) => describe(service, call) }],
    [`${SERVICE_PATH}/Batches`, { kind: 'stream', handle: (call, sink) => batches(service, call, sink) }],
    [`${SERVICE_PATH}/Status`, { kind: 'unary', handle: (call) => status(service, call) }],
    [HEALTH_CHECK_PATH, { kind: 'unary', handle: () => health(closing) }],
  ]);
  const server = new GrpcServer({
    methods,
    maxRequestBytes: MAX_REQUEST_BYTES,
    maxConcurrentStreams: 256,
    tls: options.tls,
    failureOf,
    log,
  });
  const bindHost = host.startsWith('[') ? host.slice(1, -1) : host;
  const port = await server.listen(bindHost, options.port ?? 0).catch((err: Error) => {
    throw new UserError(`augment serve: cannot listen on ${host}:${options.port ?? 0}: ${err.message}`, {
      code: 'unreachable',
    });
  });
  return {
    host,
    port,
    load: () => service.meter.load(),
    async close(graceMs = 5000) {
      closing = true;
      await server.close(graceMs);
      const pools = await service.datasets.closeAll();
      log(
        `augment serve: pools stopped after ${pools.waited} batches being made finished (${pools.running} still running)`,
      );
    },
  };
}
