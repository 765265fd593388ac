// Adapter to tf.data, for model.fitDataset / evaluateDataset. The backend is the application's choice.
import * as tf from '@tensorflow/tfjs';
import type { Batch, BatchStream } from './batch-stream.js';

export interface TfDatasetOptions {
  /**
   * Batches per iterator: each dataset.iterator() (fitDataset makes one per epoch when batchesPerEpoch is not
   * given; evaluateDataset one per evaluation) yields this many batches, continuing the endless stream —
   * Keras' steps_per_epoch / validation_steps. Default: unbounded (use fitDataset's batchesPerEpoch).
   */
  stepsPerEpoch?: number;
}

export function batchToTensors(batch: Batch): { xs: tf.Tensor4D; ys: tf.Tensor2D } {
  const [n] = batch.shape;
  return tf.tidy(() => ({
    xs:
      batch.xs instanceof Float32Array
        ? tf.tensor4d(batch.xs, batch.shape, 'float32')
        : tf.tensor4d(batch.xs, batch.shape, 'int32'),
    ys: tf.tensor2d(batch.ys, [n, 1], 'float32'),
  }));
}

/** A tf.data.Dataset over the stream's batches (xs: [n, h, w, 3], ys: [n, 1]). Every iterator shares the stream. */
export function toTfDataset(
  stream: BatchStream,
  options: TfDatasetOptions = {},
): tf.data.Dataset<{ xs: tf.Tensor4D; ys: tf.Tensor2D }> {
  const limit = options.stepsPerEpoch ?? Infinity;
  if (!(limit > 0)) throw new RangeError(`stepsPerEpoch must be > 0, got ${limit}`);
  return tf.data.generator(() => {
    let taken = 0;
    const iterator: AsyncIterator<{ xs: tf.Tensor4D; ys: tf.Tensor2D }> = {
      async next() {
        if (taken >= limit) return { done: true, value: undefined };
        const r = await stream.next();
        if (r.done) return { done: true, value: undefined };
        taken++;
        const tensors = batchToTensors(r.value);
        // The wasm backend copies the values into its heap at once, so the buffer can be reused; others (cpu, webgl,
        // tfjs-node) may keep the typed array itself, and the buffer is left to the garbage collector.
        if (tf.getBackend() === 'wasm') r.value.release();
        return { done: false, value: tensors };
      },
    };
    return iterator;
  }) as tf.data.Dataset<{ xs: tf.Tensor4D; ys: tf.Tensor2D }>;
}
