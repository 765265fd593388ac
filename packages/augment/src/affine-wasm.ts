// The WASM SIMD sampler behind applyAffine for the 'nearest' and 'constant' fill modes (../wasm/affine.wat): about
// 3× the JS loop's speed. One instance per thread, on its own memory laid out as
//   [decode buffer (sourceBuffer)] [source copy, unless sampling the decode buffer] [row table] [column table]
//   [the source as float32 RGBx] [output]
// (each region padded): a JPEG decoded into the decode buffer is sampled in place, and sampling anything else never
// overwrites it. Set CATDOG_AUGMENT_WASM=0 to use the JS loop everywhere.
import { readFileSync } from 'node:fs';
import type { AffineJob } from './transform.js';

interface SamplerExports {
  memory: WebAssembly.Memory;
  gather_rgbx(rows: number, cols: number, h: number, w: number, dst: number): void;
  affine_rgb(
    img: number, h: number, w: number, out: number,
    m00: number, m01: number, m02: number, m10: number, m11: number, m12: number,
    constant: number, cval: number, rescale: number, flipH: number, flipV: number, u8: number,
  ): void;
}

/** Bytes after the source and the output that the kernel may touch (it loads 4 source bytes per texel and stores 16 output bytes per pixel). */
const PAD = 16;
const PAGE = 65536;

let sampler: SamplerExports | null | undefined;
/** Bytes at the start of memory handed out by sourceBuffer. */
let decodeBytes = 0;

function load(): SamplerExports | null {
  if (sampler !== undefined) return sampler;
  sampler = null;
  if (process.env.CATDOG_AUGMENT_WASM !== '0') {
    try {
      const bytes = readFileSync(new URL('../wasm/affine.wasm', import.meta.url));
      sampler = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as SamplerExports;
    } catch {
      sampler = null; // no WASM SIMD here: the JS loop does the work
    }
  }
  return sampler;
}

const align = (n: number) => (n + 15) & ~15;

function ensureMemory(s: SamplerExports, bytes: number): void {
  const have = s.memory.buffer.byteLength;
  if (bytes > have) s.memory.grow(Math.ceil((bytes - have) / PAGE));
}

/** True when the WASM sampler is available (WASM SIMD supported and not disabled). */
export function wasmSamplerAvailable(): boolean {
  return load() !== null;
}

/**
 * A buffer of `bytes` bytes at the start of the sampler's memory (valid until the next call of anything here), or null
 * without the sampler. Decoding into it lets wasmAffine sample the pixels in place.
 */
export function sourceBuffer(bytes: number): Buffer | null {
  const s = load();
  if (!s) return null;
  decodeBytes = align(bytes + PAD);
  ensureMemory(s, decodeBytes);
  return Buffer.from(s.memory.buffer, 0, bytes);
}

/** Samples job ('nearest' or 'constant' fill) on the WASM sampler; false (nothing written) when there is none. */
export function wasmAffine(job: AffineJob): boolean {
  const s = load();
  if (!s) return false;
  const { src, rows, cols, height: h, width: w, data } = job;
  const u8 = data instanceof Uint8Array;
  const inPlace = src.buffer === s.memory.buffer && src.byteOffset === 0 && src.byteLength <= decodeBytes;
  const srcAt = inPlace ? 0 : decodeBytes;
  const rowsAt = align(srcAt + src.byteLength + PAD);
  const colsAt = align(rowsAt + h * 4);
  const imgAt = align(colsAt + w * 4);
  const outAt = imgAt + (h + 1) * (w + 1) * 16;
  const outLength = h * w * 3;
  ensureMemory(s, outAt + outLength * (u8 ? 1 : 4) + PAD);
  const buffer = s.memory.buffer; // after any growth
  if (!inPlace) new Uint8Array(buffer, srcAt, src.byteLength).set(src);
  const rowTable = new Int32Array(buffer, rowsAt, h);
  for (let i = 0; i < h; i++) rowTable[i] = rows[i]! + srcAt; // addresses
  new Int32Array(buffer, colsAt, w).set(cols);
  s.gather_rgbx(rowsAt, colsAt, h, w, imgAt);
  const m = job.matrix;
  s.affine_rgb(
    imgAt, h, w, outAt,
    m[0]!, m[1]!, m[2]!, m[3]!, m[4]!, m[5]!,
    job.fillMode === 'constant' ? 1 : 0, job.cval, job.rescale, job.flipHorizontal ? 1 : 0, job.flipVertical ? 1 : 0, u8 ? 1 : 0,
  );
  if (u8) data.set(new Uint8Array(buffer, outAt, outLength), job.offset);
  else data.set(new Float32Array(buffer, outAt, outLength), job.offset);
  return true;
}
