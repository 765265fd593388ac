// Loads every native (or WebAssembly) module the CLIs need and runs each once, from the installed node_modules.
// The image build runs it right after `npm ci` (deploy/Dockerfile), so an image in which sharp, TurboJPEG, h5wasm,
// esbuild or the tfjs wasm backend cannot load is never pushed. Plain JavaScript, no workspace code: it checks the
// install only.
import { createRequire } from 'node:module';
import { dirname, sep } from 'node:path';

const require = createRequire(import.meta.url);
const checks = [];
async function check(name, run) {
  try {
    checks.push(`${name}: ${await run()}`);
  } catch (err) {
    process.stderr.write(`error: ${name} cannot load or run: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}

// 16×8 pixels of RGB gradient, encoded by libvips (sharp) and decoded by libjpeg-turbo: both binaries run.
const width = 16;
const height = 8;
const raw = Buffer.alloc(width * height * 3);
for (let i = 0; i < raw.length; i++) raw[i] = (i * 7) % 256;
let jpeg;
await check('sharp', async () => {
  const { default: sharp } = await import('sharp');
  jpeg = await sharp(raw, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
  const meta = await sharp(jpeg).metadata();
  if (meta.format !== 'jpeg' || meta.width !== width || meta.height !== height)
    throw new Error(`unexpected ${JSON.stringify(meta)}`);
  return `libvips ${sharp.versions.vips}, encoded ${jpeg.length} B JPEG`;
});
await check('@julusian/jpeg-turbo', async () => {
  const { default: turbo } = await import('@julusian/jpeg-turbo');
  const out = turbo.decompressSync(jpeg, { format: turbo.FORMAT_RGB });
  if (out.width !== width || out.height !== height || out.data.length !== raw.length)
    throw new Error(`decoded ${out.width}×${out.height}`);
  return `decoded ${out.width}×${out.height}`;
});
await check('h5wasm', async () => {
  const h5wasm = await import('h5wasm/node');
  await h5wasm.ready;
  return 'ready';
});
await check('@tensorflow/tfjs-backend-wasm', async () => {
  const tf = await import('@tensorflow/tfjs');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  wasm.setWasmPaths(dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + sep);
  if (!(await tf.setBackend('wasm'))) throw new Error('setBackend(wasm) returned false');
  const sum = tf.tensor1d([1, 2, 3]).sum().dataSync()[0];
  if (sum !== 6) throw new Error(`sum was ${sum}`);
  return `backend ${tf.getBackend()}`;
});
// esbuild's platform binary compiles the CLIs next (tools/build.mjs): one TypeScript line through it.
await check('esbuild', async () => {
  const { transform, version } = await import('esbuild');
  const { code } = await transform('const n: number = 6;', { loader: 'ts' });
  if (code.trim() !== 'const n = 6;') throw new Error(`compiled to ${JSON.stringify(code)}`);
  return `esbuild ${version}`;
});
process.stdout.write(
  `native modules load (node ${process.version}, uid ${process.getuid?.()}):\n  ${checks.join('\n  ')}\n`,
);
