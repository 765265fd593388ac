// Makes real run directories for the report tests by actually training a tiny tfjs model (cpu backend) on
// features of real images from ../shared (8×8 RGB thumbnails), and writing the run directory files the trainer
// writes: config.json, history.json, metrics.json (with misclassified thumbnails), model/model.json, summary.txt.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { kaggleTrainDir } from '../helpers/fixtures.js';

interface Sample {
  key: string;
  label: 0 | 1;
  features: Float32Array;
}

let samplesPromise: Promise<Sample[]> | undefined;

/** 30 cats and 30 dogs, interleaved cat/dog so every slice holds both classes. */
function loadSamples(): Promise<Sample[]> {
  samplesPromise ??= (async () => {
    const keys: { key: string; label: 0 | 1 }[] = [];
    for (let i = 0; i < 30; i++) keys.push({ key: `cat.${i}`, label: 0 }, { key: `dog.${i}`, label: 1 });
    return Promise.all(
      keys.map(async ({ key, label }) => {
        const raw = await sharp(join(kaggleTrainDir, `${key}.jpg`))
          .resize(8, 8, { fit: 'fill' })
          .removeAlpha()
          .raw()
          .toBuffer();
        return { key, label, features: Float32Array.from(raw, (v) => v / 255) };
      }),
    );
  })();
  return samplesPromise;
}

export interface RealRunOptions {
  strategy: string;
  base?: string | null;
  epochs?: number;
  hiddenUnits?: number;
  learningRate?: number;
  /** Leave metrics.json out, like a run that has not been evaluated yet. */
  withoutMetrics?: boolean;
}

/** Trains a small dense net and writes a complete run directory at `dir`. Returns the history written. */
export async function makeRealRun(dir: string, options: RealRunOptions): Promise<Record<string, number[]>> {
  await tf.setBackend('cpu');
  const samples = await loadSamples();
  const train = samples.slice(0, 40);
  const test = samples.slice(40);
  const x = tf.tensor2d(train.map((s) => Array.from(s.features)));
  const y = tf.tensor2d(train.map((s) => [s.label]));
  const model = tf.sequential({ name: `${options.strategy}_net` });
  model.add(
    tf.layers.dense({ units: options.hiddenUnits ?? 16, activation: 'relu', inputShape: [192], name: 'hidden' }),
  );
  model.add(tf.layers.dropout({ rate: 0.2, name: 'dropout' }));
  model.add(tf.layers.dense({ units: 1, activation: 'sigmoid', name: 'output' }));
  model.compile({
    optimizer: tf.train.adam(options.learningRate ?? 0.01),
    loss: 'binaryCrossentropy',
    metrics: ['accuracy'],
  });
  const epochs = options.epochs ?? 6;
  const seconds: number[] = [];
  const imagesPerS: number[] = [];
  let t0 = performance.now();
  const started = performance.now();
  const fitted = await model.fit(x, y, {
    epochs,
    batchSize: 10,
    validationSplit: 0.25,
    shuffle: true,
    verbose: 0,
    callbacks: {
      onEpochBegin: async () => {
        t0 = performance.now();
      },
      onEpochEnd: async () => {
        const s = (performance.now() - t0) / 1000;
        seconds.push(s);
        imagesPerS.push(30 / s);
      },
    },
  });
  const wallSeconds = (performance.now() - started) / 1000;
  const history: Record<string, number[]> = {
    epoch: Array.from({ length: epochs }, (_, i) => i + 1),
    loss: fitted.history.loss as number[],
    acc: fitted.history.acc as number[],
    val_loss: fitted.history.val_loss as number[],
    val_acc: fitted.history.val_acc as number[],
    seconds,
    images_per_s: imagesPerS,
  };
  await mkdir(join(dir, 'model'), { recursive: true });
  await writeFile(join(dir, 'history.json'), JSON.stringify(history, null, 2));
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify(
      {
        strategy: options.strategy,
        base: options.base ?? null,
        // As the trainer: config.json holds what was asked, metrics.json the backend that ran.
        backend: 'auto',
        optimizer: { name: 'adam', learningRate: options.learningRate ?? 0.01 },
        epochs,
        batchSize: 10,
        data: { source: kaggleTrainDir, features: '8x8 RGB thumbnails', train: 30, validation: 10, test: test.length },
      },
      null,
      2,
    ),
  );
  const lines: string[] = [];
  model.summary(undefined, undefined, (line: string) => lines.push(line));
  await writeFile(join(dir, 'summary.txt'), `${lines.join('\n')}\n`);
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightsBin = Buffer.from(artifacts.weightData as ArrayBuffer);
      await writeFile(join(dir, 'model', 'weights.bin'), weightsBin);
      await writeFile(
        join(dir, 'model', 'model.json'),
        JSON.stringify({
          format: artifacts.format,
          generatedBy: artifacts.generatedBy,
          convertedBy: null,
          modelTopology: artifacts.modelTopology,
          weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
        }),
      );
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  if (!options.withoutMetrics) {
    const probs = tf
      .tidy(() => model.predict(tf.tensor2d(test.map((s) => Array.from(s.features)))) as tf.Tensor)
      .dataSync();
    let correct = 0;
    let lossSum = 0;
    const confusion = [
      [0, 0],
      [0, 0],
    ];
    const misclassified: { key: string; label: number; probability: number; image: string }[] = [];
    await mkdir(join(dir, 'misclassified'), { recursive: true });
    for (let i = 0; i < test.length; i++) {
      const s = test[i]!;
      const p = probs[i]!;
      const predicted = p >= 0.5 ? 1 : 0;
      confusion[s.label]![predicted]!++;
      const clipped = Math.min(Math.max(p, 1e-7), 1 - 1e-7);
      lossSum += -(s.label * Math.log(clipped) + (1 - s.label) * Math.log(1 - clipped));
      if (predicted === s.label) correct++;
      else {
        const image = `misclassified/${s.key}.jpg`;
        await sharp(join(kaggleTrainDir, `${s.key}.jpg`))
          .resize(150, 150, { fit: 'inside' })
          .jpeg({ quality: 80 })
          .toFile(join(dir, image));
        misclassified.push({ key: s.key, label: s.label, probability: p, image });
      }
    }
    const valAcc = history.val_acc!;
    await writeFile(
      join(dir, 'metrics.json'),
      JSON.stringify(
        {
          test: {
            accuracy: correct / test.length,
            loss: lossSum / test.length,
            n: test.length,
            confusion,
            misclassified,
          },
          bestValAcc: Math.max(...valAcc),
          bestEpoch: valAcc.indexOf(Math.max(...valAcc)) + 1,
          backend: { name: tf.getBackend(), threads: 1 },
          wallSeconds,
          imagesPerSecond: imagesPerS.reduce((a, b) => a + b, 0) / imagesPerS.length,
          epochs,
        },
        null,
        2,
      ),
    );
  }
  x.dispose();
  y.dispose();
  model.dispose();
  return history;
}
