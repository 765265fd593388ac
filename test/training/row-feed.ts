// Shared by the fit-loop tests: an endless feed of 4-feature rows in batches, on whatever backend is set.
import * as tf from '@tensorflow/tfjs';
import type { BatchFeed } from '@catdog/training';

/** Batches of `batch` rows of xs (4 features each) and ys, from the start again after the last. */
export function rowFeed(xs: Float32Array, ys: Float32Array, batch: number): BatchFeed {
  let pos = 0;
  const n = ys.length;
  return {
    async next() {
      if (pos >= n) pos = 0;
      const k = Math.min(batch, n - pos);
      const b = {
        xs: tf.tensor2d(xs.subarray(pos * 4, (pos + k) * 4), [k, 4]),
        ys: tf.tensor2d(ys.subarray(pos, pos + k), [k, 1]),
        n: k,
      };
      pos += k;
      return b;
    },
  };
}
