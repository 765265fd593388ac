// A small real cat-vs-dog model for the export, Grad-CAM and web tests: MobileNetV2 0.35 (shared ImageNet weights)
// at 128×128 with the book's dense head (32 units), the head trained on 60 Kaggle photos' features, saved as a run saves
// its model (model/model.json). Inputs are prepared exactly as the trainer does (decodeResized nearest, x/127.5 − 1).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { decodeResized } from '@catdog/augment';
import { buildHead, loadMobileNetV2Base, saveLayersModelTo, stackBaseAndHead } from '@catdog/models';
import { kaggleTrainDir, mobilenetV2Dir } from '../helpers/fixtures.js';

export const INPUT_SIZE = 128;
export const CLASSES = ['cat', 'dog'];

/** The trainer's input for one photo: decoded, resized (nearest, as Keras' load_img) and scaled to [-1, 1]. */
export async function trainerInput(file: string, size = INPUT_SIZE): Promise<tf.Tensor3D> {
  const pixels = await decodeResized(await readFile(file), {
    height: size,
    width: size,
    interpolation: 'nearest',
    jpegDecoder: 'exact',
  });
  return tf.tidy(() => tf.tensor3d(Float32Array.from(pixels), [size, size, 3]).div(127.5).sub(1) as tf.Tensor3D);
}

export const photo = (name: string) => join(kaggleTrainDir, name);

/**
 * Trains the book's head on the frozen base's features (computed once, as the extract strategy does), stacks base
 * and head and saves the model to `<dir>/model` as a run does; returns the folder.
 */
export async function trainSmallModel(dir: string, perClass = 30, epochs = 30): Promise<string> {
  const base = await loadMobileNetV2Base({
    alpha: 0.35,
    from: mobilenetV2Dir('0.35'),
    inputShape: [INPUT_SIZE, INPUT_SIZE, 3],
  });
  const files: string[] = [];
  const labels: number[] = [];
  for (let i = 0; i < perClass; i++) {
    files.push(photo(`cat.${i}.jpg`), photo(`dog.${i}.jpg`));
    labels.push(0, 1);
  }
  const xs = tf.stack(await Promise.all(files.map((f) => trainerInput(f))));
  const features = base.predict(xs) as tf.Tensor;
  const ys = tf.tensor2d(labels, [labels.length, 1]);
  const head = buildHead({ inputShape: features.shape.slice(1), units: 32, seed: 7 });
  head.compile({ optimizer: tf.train.rmsprop(1e-4), loss: 'binaryCrossentropy' });
  await head.fit(features, ys, { epochs, batchSize: 20, shuffle: false, verbose: 0 });
  tf.dispose([xs, features, ys]);
  base.trainable = false;
  const model = stackBaseAndHead(base, { units: 32 });
  for (const layer of head.layers) if (layer.weights.length) model.getLayer(layer.name).setWeights(layer.getWeights());
  head.dispose();
  const out = join(dir, 'model');
  await saveLayersModelTo(model, out);
  model.dispose();
  return out;
}
