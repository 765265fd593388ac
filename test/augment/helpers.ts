// Small in-memory sources of real Kaggle images for the stream tests.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SampleSource, Batch, BatchStream } from '@catdog/augment';
import { kaggleTrainDir } from '../helpers/fixtures.js';

export interface MemorySample {
  key: string;
  label: number;
  className: string;
  bytes: Uint8Array;
  ext: string;
}

/** cat.0..cat.{n-1} and dog.0..dog.{n-1} from the shared training folder. */
export function kaggleSamples(n: number): MemorySample[] {
  return Array.from({ length: n }, (_, i) => [
    {
      key: `cat.${i}`,
      label: 0,
      className: 'cats',
      bytes: readFileSync(join(kaggleTrainDir, `cat.${i}.jpg`)),
      ext: 'jpg',
    },
    {
      key: `dog.${i}`,
      label: 1,
      className: 'dogs',
      bytes: readFileSync(join(kaggleTrainDir, `dog.${i}.jpg`)),
      ext: 'jpg',
    },
  ]).flat();
}

export function memorySource(samples: MemorySample[]): SampleSource {
  return {
    classes: ['cats', 'dogs'],
    count: samples.length,
    async *samples() {
      yield* samples;
    },
  };
}

/** Every delivered image by (epoch, key), and the key order per epoch. */
export async function drain(
  stream: BatchStream | AsyncIterable<Batch>,
  release = false,
): Promise<{ images: Map<string, number[]>; order: Map<number, string[]>; batches: Batch[] }> {
  const images = new Map<string, number[]>();
  const order = new Map<number, string[]>();
  const batches: Batch[] = [];
  for await (const b of stream) {
    batches.push(b);
    const per = b.xs.length / b.shape[0];
    b.keys.forEach((k, j) => {
      images.set(`${b.epoch}/${k}`, Array.from(b.xs.subarray(j * per, (j + 1) * per)));
      order.set(b.epoch, [...(order.get(b.epoch) ?? []), k]);
    });
    if (release) b.release(); // its buffer comes back, full of this batch's pixels, for a later batch
  }
  return { images, order, batches };
}
