// One batch of a Batches call: which samples make it, the task the pool runs on them, the frame that carries it.
import { batchIndices, epochSampleOrder } from '../plan.js';
import type { LoadedSamples } from '../source.js';
import type { BatchResult, BatchTask, SharedSamples } from '../worker.js';
import { type Served, track } from './datasets.js';
import { encodeFrameHead, type BatchRecipe, type BatchesRequest, type ServerLoad } from './protocol.js';

/** Which samples make one batch, as the pool takes them. */
interface BatchSamples {
  indices: number[];
  keys: string[];
  labels: ArrayLike<number>;
  encoded?: SharedSamples;
}

/** A batch the pool made: its samples and the pool's result. */
export interface MadeBatch {
  index: number;
  samples: BatchSamples;
  result: BatchResult;
}

/** Makes batch `index` of the request's epoch on the dataset's pool (into a released batch memory when one is spare). */
export async function makeBatch(s: Served, r: BatchesRequest, index: number): Promise<MadeBatch> {
  const samples = await samplesOf(s, r, index);
  const result = await track(s, s.pool.run(taskOf(r, samples), s.spare.pop(), `batch ${index} of epoch ${r.epoch}`));
  return { index, samples, result };
}

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

/** The epoch's sample order, kept for the next batches of the epoch (a few epochs' orders at once). */
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

/**
 * The frame of a made batch, as its two parts: the head (the kept samples' keys and labels, the skipped ones'
 * reasons, the server's load) and the pixels, a view of the pool's result.
 */
export function framePartsOf(r: BatchesRequest, made: MadeBatch, load: ServerLoad): [Buffer, Uint8Array] {
  const { index, samples: b, result: res } = made;
  const elements = res.kept.length * r.height * r.width * 3;
  const head = encodeFrameHead({
    epoch: r.epoch,
    index,
    height: r.height,
    width: r.width,
    dtype: r.dtype,
    keys: res.kept.map((p) => b.keys[p]),
    labels: res.kept.map((p) => b.labels[p]),
    skipped: res.skipped.map((x) => ({ key: b.keys[x.position], reason: x.reason })),
    workerMs: res.workerMs,
    load,
  });
  return [head, new Uint8Array(res.xs, 0, elements * (r.dtype === 'uint8' ? 1 : 4))];
}
