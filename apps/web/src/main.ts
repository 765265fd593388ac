// The browser app: loads an exported model (./model/ beside the page, or ?model=<url>), classifies photos the user
// drops or picks, entirely in the browser (WebGL, else WebAssembly), and shows the probabilities and a Grad-CAM
// heatmap. The preprocessing and Grad-CAM code is the very code the Node side runs (packages/models).
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import wasmPlain from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm?url';
import wasmSimd from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm?url';
import wasmThreadedSimd from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm?url';
import {
  checkLabels,
  classifyPixels,
  type Classification,
  type ExportedLabels,
} from '../../../packages/models/src/image-input.js';
import { gradCam, heatmapRgba } from '../../../packages/models/src/gradcam.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $<HTMLParagraphElement>('status');

function setStatus(text: string, error = false): void {
  status.textContent = text;
  status.classList.toggle('error', error);
}

/** True when this browser can create a WebGL context (checked first, so tfjs does not log a failed init). */
function webglAvailable(): boolean {
  try {
    const canvas = document.createElement('canvas');
    return !!(canvas.getContext('webgl2') ?? canvas.getContext('webgl'));
  } catch {
    return false;
  }
}

/** WebGL, else WebAssembly (binaries bundled with the site), else plain JS; ?backend= forces one. */
async function chooseBackend(): Promise<string> {
  const abs = (u: string) => new URL(u, location.href).href;
  setWasmPaths({
    'tfjs-backend-wasm.wasm': abs(wasmPlain),
    'tfjs-backend-wasm-simd.wasm': abs(wasmSimd),
    'tfjs-backend-wasm-threaded-simd.wasm': abs(wasmThreadedSimd),
  });
  const forced = new URLSearchParams(location.search).get('backend');
  const order = forced ? [forced] : webglAvailable() ? ['webgl', 'wasm', 'cpu'] : ['wasm', 'cpu'];
  for (const name of order) {
    try {
      if (await tf.setBackend(name)) {
        await tf.ready();
        return name;
      }
    } catch {
      /* try the next one */
    }
  }
  throw new Error(`no TensorFlow.js backend could start (tried ${order.join(', ')})`);
}

interface Loaded {
  model: tf.LayersModel;
  labels: ExportedLabels;
  url: string;
}
let current: Loaded | null = null;

/** The model folder's URL, ending in '/': ?model=, else ./model/ beside the page. */
function modelFolder(input: string | null): string {
  const raw = input?.trim() || './model/';
  const url = new URL(
    raw.endsWith('model.json') ? raw.slice(0, -'model.json'.length) : raw.endsWith('/') ? raw : `${raw}/`,
    location.href,
  );
  return url.href;
}

async function loadModel(folder: string): Promise<Loaded> {
  const res = await fetch(new URL('labels.json', folder));
  if (!res.ok)
    throw new Error(
      `${new URL('labels.json', folder).href}: HTTP ${res.status} (expected an exported model folder: model.json, weights, labels.json)`,
    );
  const labels = checkLabels(await res.json(), new URL('labels.json', folder).href);
  const model = await tf.loadLayersModel(new URL('model.json', folder).href);
  // Warm up (shader compilation, WASM kernels) so the first photo's timing means something.
  tf.tidy(() => void model.predict(tf.zeros([1, labels.inputSize[0], labels.inputSize[1], 3])));
  return { model, labels, url: folder };
}

/** The photo's own pixels (no colour conversion, no resize): what the exported model takes. */
async function decode(file: Blob): Promise<HTMLCanvasElement> {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = $<HTMLCanvasElement>('photo');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext('2d')!.drawImage(bitmap, 0, 0);
  bitmap.close();
  return canvas;
}

function showResult(c: Classification, labels: ExportedLabels): void {
  const result = $<HTMLOutputElement>('result');
  result.textContent = `${c.className} ${(c.probability * 100).toFixed(1)}%`;
  result.dataset.class = c.className;
  result.dataset.probability = String(c.probability);
  const body = $<HTMLTableElement>('probabilities').tBodies[0]!;
  body.replaceChildren(
    ...labels.classes.map((name, i) => {
      const tr = document.createElement('tr');
      tr.dataset.class = name;
      tr.dataset.probability = String(c.probabilities[i]);
      const bar = document.createElement('div');
      bar.className = 'bar';
      bar.style.width = `${(c.probabilities[i]! * 200).toFixed(0)}px`;
      const cells = [name, `${(c.probabilities[i]! * 100).toFixed(2)}%`].map((t) =>
        Object.assign(document.createElement('td'), { textContent: t }),
      );
      const barCell = document.createElement('td');
      barCell.append(bar);
      tr.append(...cells, barCell);
      return tr;
    }),
  );
}

async function classify(file: File): Promise<void> {
  if (!current) {
    setStatus('No model loaded yet.', true);
    return;
  }
  const { model, labels } = current;
  const started = performance.now();
  let canvas: HTMLCanvasElement;
  try {
    canvas = await decode(file);
  } catch (err) {
    setStatus(`${file.name}: not an image this browser can decode (${(err as Error).message})`, true);
    return;
  }
  const pixels = tf.browser.fromPixels(canvas);
  try {
    const c = await classifyPixels(model, labels, pixels);
    const classified = performance.now();
    showResult(c, labels);
    $('output').hidden = false;
    const heat = $<HTMLCanvasElement>('heatmap');
    if (labels.lastConvLayer) {
      const cam = gradCam(model, pixels, { layer: labels.lastConvLayer, classIndex: c.classIndex });
      heat.width = canvas.width;
      heat.height = canvas.height;
      const rgba = heatmapRgba(cam, canvas.height, canvas.width, 0.45);
      heat
        .getContext('2d')!
        .putImageData(new ImageData(rgba as Uint8ClampedArray<ArrayBuffer>, canvas.width, canvas.height), 0, 0);
      heat.dataset.values = JSON.stringify(Array.from(cam.heatmap, (v) => Number(v.toFixed(5))));
      $('cam-layer').textContent = `${cam.layer}, ${cam.height}×${cam.width}, for “${labels.classes[cam.classIndex]}”`;
    }
    heat.hidden = !$<HTMLInputElement>('show-heatmap').checked;
    $('timing').textContent =
      `${file.name}: ${canvas.width}×${canvas.height}, classified in ${(classified - started).toFixed(0)} ms, heatmap in ${(performance.now() - classified).toFixed(0)} ms (${tf.getBackend()})`;
    setStatus(`${file.name}: ${c.className}`);
    document.body.dataset.state = 'classified';
  } catch (err) {
    setStatus(`${file.name}: ${(err as Error).message}`, true);
  } finally {
    pixels.dispose();
  }
}

/** Registers the service worker and asks it to keep everything this page fetched, so the app works offline. */
async function keepOffline(): Promise<void> {
  if (!('serviceWorker' in navigator) || !isSecureContext) return;
  const registration = await navigator.serviceWorker.register('./sw.js');
  const worker = registration.active ?? (await navigator.serviceWorker.ready).active;
  if (!worker) return;
  const urls = [location.href, ...performance.getEntriesByType('resource').map((e) => e.name)].filter(
    (u) => new URL(u).origin === location.origin,
  );
  await new Promise<void>((done) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => done();
    worker.postMessage({ type: 'cache', urls: [...new Set(urls)] }, [channel.port2]);
  });
  document.body.dataset.offline = 'ready';
}

async function start(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const urlInput = $<HTMLInputElement>('model-url');
  urlInput.value = params.get('model') ?? '';
  let backend: string;
  try {
    backend = await chooseBackend();
  } catch (err) {
    setStatus((err as Error).message, true);
    return;
  }
  document.body.dataset.backend = backend;
  const load = async (input: string | null) => {
    const folder = modelFolder(input);
    setStatus(`Loading the model from ${folder} …`);
    try {
      current?.model.dispose();
      current = null;
      current = await loadModel(folder);
      const { labels } = current;
      setStatus(
        `Model ready: ${labels.classes.join(' / ')}, ${labels.inputSize[0]}×${labels.inputSize[1]}${labels.quantization ? `, ${labels.quantization} weights` : ''}, on ${backend}. Drop a photo.`,
      );
      document.body.dataset.state = 'ready';
    } catch (err) {
      setStatus(`Cannot load the model: ${(err as Error).message}`, true);
      document.body.dataset.state = 'error';
    }
  };
  $<HTMLFormElement>('model-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const next = new URL(location.href);
    if (urlInput.value.trim()) next.searchParams.set('model', urlInput.value.trim());
    else next.searchParams.delete('model');
    history.replaceState(null, '', next);
    void load(urlInput.value);
  });
  const fileInput = $<HTMLInputElement>('file');
  fileInput.addEventListener('change', () => {
    const file = fileInput.files?.[0];
    if (file) void classify(file);
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = e.dataTransfer?.files[0];
    if (file) void classify(file);
  });
  $<HTMLInputElement>('show-heatmap').addEventListener('change', (e) => {
    $('heatmap').hidden = !(e.target as HTMLInputElement).checked;
  });
  await load(params.get('model'));
  if (current)
    await keepOffline().catch((err: unknown) =>
      setStatus(`${status.textContent} (offline cache unavailable: ${(err as Error).message})`),
    );
}

void start();
