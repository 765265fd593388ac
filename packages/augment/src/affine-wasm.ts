// The WASM SIMD sampler behind applyAffine for the 'nearest' and 'constant' fill modes (../wasm/affine.wat): about
// 3.5× the JS loop's speed. It works on one memory at a time, laid out from `base` as
//   [decode buffer (sourceBuffer)] [source copy, unless sampling the decode buffer] [row table] [column table]
//   [the source as float32 RGBx] [output, unless written in place]
// (each region padded): a JPEG decoded into the decode buffer is sampled in place, and sampling anything else never
// overwrites it. A sampler is a value the caller passes along: threadSampler() works in the thread's own memory
// (base 0); batchSampler() in a shared memory whose first bytes are a batch, so a worker writes images where the
// consumer reads them, with no copy, and the main thread views the same bytes.
// Set CATDOG_AUGMENT_WASM=0 to use the JS loop everywhere.
import { readFileSync } from 'node:fs';
import type { FillMode } from './options.js';

/** One applyAffine call, resolved: where the source's rows and columns are, and where the pixels go. */
export interface AffineJob {
  src: Uint8Array;
  rows: Int32Array;
  cols: Int32Array;
  height: number;
  width: number;
  matrix: ArrayLike<number>;
  fillMode: FillMode;
  cval: number;
  data: Float32Array | Uint8Array;
  /** element offset of the image in data */
  offset: number;
  /** float32; 1 for uint8 outputs */
  rescale: number;
  flipHorizontal: boolean;
  flipVertical: boolean;
}

interface SamplerExports {
  gather_rgbx(rows: number, cols: number, h: number, w: number, dst: number): void;
  affine_rgb(
    img: number,
    h: number,
    w: number,
    out: number,
    m00: number,
    m01: number,
    m02: number,
    m10: number,
    m11: number,
    m12: number,
    constant: number,
    cval: number,
    rescale: number,
    flipH: number,
    flipV: number,
    u8: number,
  ): void;
}

/** A WASM sampler and the memory it works in: decodeForSampling and applyAffine take one (see threadSampler). */
export interface Sampler {
  memory: WebAssembly.Memory;
  kernels: SamplerExports;
  /** where the scratch regions start */
  base: number;
  /** bytes of the decode buffer handed out last */
  decodeBytes: number;
  /** the buffer a batch's views were made on (output written in place), if any */
  batch: ArrayBufferLike | null;
}

/** Bytes after the source and the output that the kernel may touch (it loads 4 source bytes per texel and stores 16 output bytes per pixel). */
const PAD = 16;
const PAGE = 65536;
/** Room a batch memory may grow to beyond its batch, for the scratch of the largest photos. */
const BATCH_SCRATCH_MAX = 512 * 1024 * 1024;

let modules: { local: WebAssembly.Module; shared: WebAssembly.Module | null } | null | undefined;
let local: Sampler | null | undefined;

function compiled(): typeof modules {
  if (modules !== undefined) return modules;
  modules = null;
  if (process.env.CATDOG_AUGMENT_WASM !== '0') {
    try {
      const compile = (name: string) =>
        new WebAssembly.Module(readFileSync(new URL(`../wasm/${name}`, import.meta.url)));
      let shared: WebAssembly.Module | null = null;
      try {
        shared = compile('affine-shared.wasm');
      } catch {
        shared = null; // no shared memory: batches are copied out
      }
      modules = { local: compile('affine.wasm'), shared };
    } catch {
      modules = null; // no WASM SIMD here: the JS loop does the work
    }
  }
  return modules;
}

function instantiate(
  module: WebAssembly.Module,
  memory: WebAssembly.Memory,
  base: number,
  batch: ArrayBufferLike | null,
): Sampler {
  const kernels = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as SamplerExports;
  return { memory, kernels, base, decodeBytes: 0, batch };
}

/** The sampler over this thread's own memory (made once per thread), or null without WASM SIMD. */
export function threadSampler(): Sampler | null {
  if (local === undefined) {
    const m = compiled();
    local = m ? instantiate(m.local, new WebAssembly.Memory({ initial: 1, maximum: 65536 }), 0, null) : null;
  }
  return local;
}

const align = (n: number) => (n + 15) & ~15;

function ensureMemory(s: Sampler, bytes: number): void {
  const have = s.memory.buffer.byteLength;
  if (bytes > have) s.memory.grow(Math.ceil((bytes - have) / PAGE));
}

/**
 * A sampler over a shared memory whose first `bytes` bytes hold a batch (`reuse` if it is big enough, else a new
 * one): views of `sampler.memory.buffer` passed as applyAffine's output are written in place. Null without the
 * sampler or shared memory: the caller then uses an ArrayBuffer.
 */
export function batchSampler(bytes: number, reuse?: WebAssembly.Memory): Sampler | null {
  const m = compiled();
  if (!m?.shared) return null;
  const base = align(bytes + PAD);
  let memory = reuse && reuse.buffer.byteLength >= base ? reuse : null;
  if (!memory) {
    const initial = Math.ceil((base + 2 * 1024 * 1024) / PAGE);
    try {
      memory = new WebAssembly.Memory({ initial, maximum: initial + BATCH_SCRATCH_MAX / PAGE, shared: true });
    } catch {
      return null; // out of address space for another memory: this batch goes through an ArrayBuffer
    }
  }
  return instantiate(m.shared, memory, base, memory.buffer);
}

/**
 * A buffer of `bytes` bytes in the sampler's memory (valid until its next use). Decoding into it lets wasmAffine
 * sample the pixels in place.
 */
export function sourceBuffer(s: Sampler, bytes: number): Buffer {
  s.decodeBytes = align(bytes + PAD);
  ensureMemory(s, s.base + s.decodeBytes);
  return Buffer.from(s.memory.buffer, s.base, bytes);
}

/** Samples job ('nearest' or 'constant' fill) on the WASM sampler s. */
export function wasmAffine(s: Sampler, job: AffineJob): void {
  const { src, rows, cols, height: h, width: w, data } = job;
  const u8 = data instanceof Uint8Array;
  const inPlace = src.buffer === s.memory.buffer && src.byteOffset === s.base && src.byteLength + PAD <= s.decodeBytes;
  const srcAt = inPlace ? s.base : s.base + s.decodeBytes;
  const rowsAt = align(srcAt + src.byteLength + PAD);
  const colsAt = align(rowsAt + h * 4);
  const imgAt = align(colsAt + w * 4);
  const outLength = h * w * 3;
  const bytesPer = u8 ? 1 : 4;
  // Output straight into a batch in this memory (its views were made on s.batch), else after the scratch.
  const direct = s.batch !== null && data.buffer === s.batch;
  const imgEnd = imgAt + (h + 1) * (w + 1) * 16;
  const outAt = direct ? data.byteOffset + job.offset * bytesPer : imgEnd;
  ensureMemory(s, direct ? imgEnd : outAt + outLength * bytesPer + PAD);
  const buffer = s.memory.buffer; // after any growth
  if (!inPlace) new Uint8Array(buffer, srcAt, src.byteLength).set(src);
  const rowTable = new Int32Array(buffer, rowsAt, h);
  for (let i = 0; i < h; i++) rowTable[i] = rows[i]! + srcAt; // addresses
  new Int32Array(buffer, colsAt, w).set(cols);
  s.kernels.gather_rgbx(rowsAt, colsAt, h, w, imgAt);
  const m = job.matrix;
  s.kernels.affine_rgb(
    imgAt,
    h,
    w,
    outAt,
    m[0]!,
    m[1]!,
    m[2]!,
    m[3]!,
    m[4]!,
    m[5]!,
    job.fillMode === 'constant' ? 1 : 0,
    job.cval,
    job.rescale,
    job.flipHorizontal ? 1 : 0,
    job.flipVertical ? 1 : 0,
    u8 ? 1 : 0,
  );
  if (direct) return;
  if (u8) data.set(new Uint8Array(buffer, outAt, outLength), job.offset);
  else data.set(new Float32Array(buffer, outAt, outLength), job.offset);
}
