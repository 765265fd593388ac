// The augmentation server: the piscina pool behind a gRPC endpoint. It reads the samples itself (local or S3, through
// @catdog/dataset) and makes the batches a trainer names by (dataset, split, recipe, epoch, batch indices), exactly
// as the in-process stream would. A prepared split within the memory budget is read into memory once; a larger one
// is served from a window of shards (window.ts), so the dataset may be larger than the server's memory. Memory is
// also bounded per call (batches.ts), so a client that stops reading stalls its call, not the server.
// This file starts and stops the server; the pieces: auth.ts (token), served-samples.ts (how a dataset is read),
// datasets.ts (the open datasets and their pools), handlers.ts (Describe, Status, health), batches.ts (Batches),
// batch-frames.ts (one batch: made, framed), load-meter.ts (the load Status and every frame report).
import { availableParallelism } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { UserError } from '@catdog/errors';
import { tokenGuard } from './auth.js';
import { batchesHandler } from './batches.js';
import { ServedDatasets } from './datasets.js';
import { describeHandler, healthHandler, type ServiceContext, statusHandler } from './handlers.js';
import { FrameBuffers } from './frame-buffers.js';
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
    frames: new FrameBuffers(2 * workers + 2),
    authorize: tokenGuard(options.token, log),
    workers,
    log,
  };
  let closing = false;
  const server = createGrpcServer(service, () => closing);
  const port = await bind(server, { host, port: options.port ?? 0, tls: options.tls });
  return {
    host,
    port,
    load: () => service.meter.load(),
    async close(graceMs = 5000) {
      closing = true;
      await shutDown(server, graceMs);
      const pools = await service.datasets.closeAll();
      log(
        `augment serve: pools stopped after ${pools.waited} batches being made finished (${pools.running} still running)`,
      );
    },
  };
}

const raw = (b: Buffer) => b;

/** A method of ours as grpc-js takes it: the messages pass as bytes (protocol.ts encodes them). */
function method(name: string, responseStream: boolean) {
  return {
    path: `${SERVICE_PATH}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  };
}

function createGrpcServer(service: ServiceContext, isClosing: () => boolean): grpc.Server {
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
    {
      Describe: describeHandler(service),
      Batches: batchesHandler(service),
      Status: statusHandler(service),
    } as grpc.UntypedServiceImplementation,
  );
  server.addService(
    { Check: { ...method('Check', false), path: HEALTH_CHECK_PATH } } as grpc.ServiceDefinition,
    { Check: healthHandler(isClosing) } as grpc.UntypedServiceImplementation,
  );
  return server;
}

/** Listens on host:port (TLS when given a certificate); resolves to the port bound (the free one for port 0). */
function bind(
  server: grpc.Server,
  at: { host: string; port: number; tls?: { cert: Buffer; key: Buffer } },
): Promise<number> {
  const credentials = at.tls
    ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: at.tls.cert, private_key: at.tls.key }], false)
    : grpc.ServerCredentials.createInsecure();
  const bindHost = at.host.includes(':') && !at.host.startsWith('[') ? `[${at.host}]` : at.host;
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(`${bindHost}:${at.port}`, credentials, (err, bound) => {
      if (err)
        reject(
          new UserError(`augment serve: cannot listen on ${bindHost}:${at.port}: ${err.message}`, {
            code: 'unreachable',
          }),
        );
      else resolve(bound);
    });
  });
}

/** Stops accepting calls and lets running ones end, forcing them closed after graceMs. */
function shutDown(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
