// MobileNetV2 conv bases from tfjs layers folders (the shared ImageNet weights), rebuilt at any input size.
import { join } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { checkInputShape } from './convnet.js';
import { loadLayersModelFrom, type LayerJson, type Topology } from './io.js';

export type MobileNetV2Alpha = 1.0 | 0.35;

export interface MobileNetV2Options {
  alpha: MobileNetV2Alpha;
  /**
   * The tfjs layers folder or model.json (local path, file:// or s3://). Default:
   * $CATDOG_WEIGHTS_DIR/mobilenet_v2_<alpha>_224 (alpha written 1.0 / 0.35).
   */
  from?: string;
  /** Default [150, 150, 3]. */
  inputShape?: [number, number, number];
  /**
   * How the stride-2 ZeroPadding2D layers pad at the new size. 'keras' (default) recomputes them as
   * keras.applications' correct_pad does (TensorFlow 'SAME' padding, what the ImageNet weights were trained
   * with), so the base equals keras.applications.MobileNetV2(input_shape=…): 150×150 → 5×5×1280.
   * 'saved' keeps the saved model's fixed ((0,1),(0,1)) pads (exact at even sizes such as 224; at 150
   * it crops odd borders and gives 4×4×1280).
   */
  padding?: 'keras' | 'saved';
}

export function mobilenetV2Folder(alpha: MobileNetV2Alpha, weightsDir: string): string {
  return join(weightsDir, `mobilenet_v2_${alpha === 1 ? '1.0' : '0.35'}_224`);
}

function inboundNames(layer: LayerJson): string[] {
  const nodes = (layer.inbound_nodes ?? []) as unknown[];
  const first = nodes[0] as unknown;
  if (!Array.isArray(first)) return [];
  return first.map((n) => (Array.isArray(n) ? String(n[0]) : String((n as { args?: unknown }).args ?? '')));
}

/** Recomputes every ZeroPadding2D that feeds a strided 'valid' convolution as Keras' correct_pad(). */
export function applyKerasCorrectPad(topology: Topology): void {
  const layers = topology.config.layers ?? [];
  const nameOf = (l: LayerJson) => (l.name ?? l.config['name']) as string;
  const sizes = new Map<string, [number, number]>();
  const consumers = new Map<string, LayerJson>();
  for (const l of layers) for (const n of inboundNames(l)) if (!consumers.has(n)) consumers.set(n, l);
  for (const l of layers) {
    const c = l.config;
    const name = nameOf(l);
    if (l.class_name === 'InputLayer') {
      const s = c['batch_input_shape'] as number[];
      sizes.set(name, [s[1], s[2]]);
      continue;
    }
    const inbound = sizes.get(inboundNames(l)[0]);
    if (!inbound) throw new UserError(`MobileNetV2 topology: cannot follow the input size into layer '${name}'`);
    let [h, w] = inbound;
    if (l.class_name === 'ZeroPadding2D') {
      const consumer = consumers.get(name);
      const k = consumer?.config['kernel_size'] as number[] | undefined;
      if (k) {
        const pad = (size: number, kernel: number): [number, number] => {
          const adjust = 1 - (size % 2);
          const correct = Math.floor(kernel / 2);
          return [correct - adjust, correct];
        };
        c['padding'] = [pad(h, k[0]), pad(w, k[1])];
      }
      const p = c['padding'] as [[number, number], [number, number]];
      h += p[0][0] + p[0][1];
      w += p[1][0] + p[1][1];
    } else if (l.class_name === 'Conv2D' || l.class_name === 'DepthwiseConv2D') {
      const s = (c['strides'] as number[] | undefined) ?? [1, 1];
      const k = c['kernel_size'] as number[];
      if (c['padding'] === 'same') {
        h = Math.ceil(h / s[0]);
        w = Math.ceil(w / s[1]);
      } else {
        h = Math.floor((h - k[0]) / s[0]) + 1;
        w = Math.floor((w - k[1]) / s[1]) + 1;
      }
    }
    if (h < 1 || w < 1) throw new UserError(`MobileNetV2: the input is too small (layer '${name}' would be ${h}×${w})`);
    sizes.set(name, [h, w]);
  }
}

/**
 * Loads a MobileNetV2 ImageNet conv base (no top) from a tfjs layers folder and rebuilds it at
 * `inputShape`. Inputs must be RGB scaled as INPUT_SCALINGS.symmetric (bases.ts). Every layer is
 * trainable after loading (the saved file's stale trainable flags are reset), as keras.applications.
 */
export async function loadMobileNetV2Base(options: MobileNetV2Options): Promise<tf.LayersModel> {
  const { alpha } = options;
  if (alpha !== 1.0 && alpha !== 0.35)
    throw new UserError(`MobileNetV2: alpha must be 1.0 or 0.35 (the shared weights), got ${alpha}`);
  const inputShape = checkInputShape(options.inputShape ?? [150, 150, 3], 32, 'MobileNetV2');
  if (inputShape[2] !== 3)
    throw new UserError(`MobileNetV2: ImageNet weights need 3 input channels, got ${inputShape[2]}`);
  let from = options.from;
  if (!from) {
    const dir = process.env.CATDOG_WEIGHTS_DIR;
    if (!dir) {
      throw new UserError(
        'MobileNetV2: no weights location: pass the tfjs model folder (from) or set CATDOG_WEIGHTS_DIR to the folder holding mobilenet_v2_1.0_224/ and mobilenet_v2_0.35_224/',
      );
    }
    from = mobilenetV2Folder(alpha, dir);
  }
  const model = await loadLayersModelFrom(from, {
    inputShape,
    transformTopology: (topology) => {
      for (const l of topology.config.layers ?? []) l.config['trainable'] = true;
      if ((options.padding ?? 'keras') === 'keras') applyKerasCorrectPad(topology);
    },
  });
  const out = model.outputs[0].shape;
  const channels = 1280; // Keras keeps the last conv at 1280 channels for alpha ≤ 1
  if (out[3] !== channels) {
    throw new UserError(
      `${from}: expected a MobileNetV2 base with ${channels} output channels, got shape [${out.join(', ')}]`,
    );
  }
  return model;
}
