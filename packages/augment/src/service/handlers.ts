// The unary methods: Describe, Status, and the health check; and what every handler works with.
import type { CallGuard } from './auth.js';
import { type Served, type ServedDatasets, track } from './datasets.js';
import type { ServerCall } from './grpc-server.js';
import type { LoadMeter } from './load-meter.js';
import {
  encodeJson,
  HEALTH_NOT_SERVING,
  HEALTH_SERVING,
  parseDescribeRequest,
  type BatchRecipe,
  type DescribeReply,
} from './protocol.js';

/** What the service's handlers share. */
export interface ServiceContext {
  datasets: ServedDatasets;
  meter: LoadMeter;
  authorize: CallGuard;
  /** Worker threads of each dataset's pool. */
  workers: number;
  log: (line: string) => void;
}

/** Describe: opens the dataset (warming its workers up for a recipe when asked) and answers what it holds. */
export async function describe(service: ServiceContext, call: ServerCall): Promise<Buffer> {
  service.authorize(call);
  const request = parseDescribeRequest(call.request);
  const s = await service.datasets.get(request);
  if (request.warmup) await warmUp(s, request.warmup);
  const reply: DescribeReply = {
    classes: s.classes,
    size: s.size,
    digest: s.data.digest,
    workers: service.workers,
  };
  return encodeJson(reply);
}

/** Warms the dataset's workers up for a recipe, once per recipe. */
async function warmUp(s: Served, recipe: BatchRecipe): Promise<void> {
  const id = JSON.stringify(recipe);
  if (s.warmed.has(id)) return;
  await track(s, s.pool.warmUp({ ...recipe }));
  s.warmed.add(id);
}

/** Status: the server's load. */
export function status(service: ServiceContext, call: ServerCall): Buffer {
  service.authorize(call);
  return encodeJson(service.meter.load());
}

/** The standard health check (no token): NOT_SERVING once the server is closing, so probes stop sending calls. */
export function health(closing: boolean): Buffer {
  return closing ? HEALTH_NOT_SERVING : HEALTH_SERVING;
}
