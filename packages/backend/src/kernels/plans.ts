// Which variant runs each convolution (../autotune.ts decides by timing; this module says which
// variants apply to a layer, which one the cost model would pick, and how to time them on a proxy).
import type * as tf from '@tensorflow/tfjs';
import { choosePlan, type Candidate, type KernelPlan, type PlanFamily } from '../autotune.js';
import { awaitSimdWorkers } from '../simd-kernels.js';
import { type WasmBackend, isPointwise, threadCount } from './base.js';
import {
  convCost,
  defaultWinogradBlock,
  winogradApplies,
  winogradOverride,
  winogradTileSize,
  winogradTiles,
  type WinogradTile,
} from './winograd.js';
import { defaultFilterGradBlock, filterGradCost, winogradFilterGradTileSize } from './winograd-filter-grad.js';
import { inputGradWinogradInfo } from './winograd-input-grad.js';

/** Largest Ci·Co (one filter tap's block: 256 KB) the direct loops take by default (a 512 KB L2 holds it). */
export const DIRECT_MAX_TAP_FLOATS = 1 << 16;
/** Largest Ci·Co the tuner tries the direct loops on (1 MB: cores with 1–2 MB of L2 may still win). */
const TUNED_MAX_TAP_FLOATS = 1 << 18;

/** Multiply-adds of the direct convolution a proxy run aims at (a few ms per run). */
const PROXY_MACS = 3e7;
/** Winograd tiles whose modelled cost is within this factor of the cheapest tile's are timed. */
const TILE_COST_SPREAD = 1.5;
/** Winograd block sizes are timed on a proxy this many times larger (enough tiles for the blocks to matter). */
const BLOCK_PROXY_SCALE = 4;

/** Per-image shape of a convolution, the key of its plan: `HxWxCi>Co kKhxKw sShxSw dDhxDw pT,L,B,R`. */
export function shapeKey(info: tf.backend_util.Conv2DInfo): string {
  const p = info.padInfo;
  return (
    `${info.inHeight}x${info.inWidth}x${info.inChannels}>${info.outChannels} k${info.filterHeight}x${info.filterWidth} ` +
    `s${info.strideHeight}x${info.strideWidth} d${info.dilationHeight}x${info.dilationWidth} p${p.top},${p.left},${p.bottom},${p.right}`
  );
}

/**
 * The input shape [B', H', W, Ci] of a proxy for timing: the same layer on fewer images (at least
 * one per thread) or, when one image is already more than the target, fewer rows. Its element
 * count never exceeds the layer's, so the proxy reads the layer's own buffers.
 */
export function proxyInputShape(
  info: tf.backend_util.Conv2DInfo,
  threads: number,
  macs = PROXY_MACS,
): [number, number, number, number] {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho } = info;
  const perRow = info.outWidth * Ci * info.outChannels * info.filterHeight * info.filterWidth;
  const perImage = perRow * Ho;
  const images = Math.min(B, Math.max(1, Math.floor(macs / perImage)));
  if (images >= Math.min(B, threads)) return [images, H, W, Ci];
  const b = Math.min(B, threads);
  const rows = Math.max(Math.min(Ho, 8), Math.floor(macs / (b * perRow)));
  const h = Math.min(H, Math.max(info.filterHeight, rows * info.strideHeight + info.filterHeight - 1));
  return [b, h, W, Ci];
}

/** The direct SIMD loop of the forward conv / input gradient / filter gradient applies (`cap`: largest Ci·Co). */
function directApplies(family: PlanFamily, info: tf.backend_util.Conv2DInfo, cap: number): boolean {
  const { inChannels: Ci, outChannels: Co, outWidth: Wo } = info;
  if (Ci * Co > cap || (Wo < 8 && !isPointwise(info))) return false; // (a pointwise layer's run is all its pixels)
  if (family === 'conv2d') {
    return (
      info.strideHeight === 1 &&
      info.strideWidth === 1 &&
      info.dilationHeight === 1 &&
      info.dilationWidth === 1 &&
      Ci >= 16 &&
      Co % 16 === 0
    );
  }
  return family === 'backprop-input' ? Ci % 16 === 0 : Co % 16 === 0;
}

/** How long tuning waits for the SIMD worker threads to start (they take ~0.1–1 s; a loaded machine, more). */
const WORKER_START_MS = 20_000;
let workersLate = false;

/**
 * Whether all the worker threads the SIMD variants share work with are up: starts them and blocks until they are
 * (once per process: if they do not come up in time, later layers do not wait again).
 */
function workersReady(backend: WasmBackend, threads: number): boolean {
  if (threads <= 1) return true;
  const wait = workersLate ? 0 : WORKER_START_MS;
  const ready = awaitSimdWorkers(backend.wasm, threads - 1, wait) >= threads - 1;
  if (!ready) workersLate = true;
  return ready;
}

/** Runs one plan on a proxy input of shape xShape (and frees its output). */
export type ProxyRun = (plan: KernelPlan, xShape: [number, number, number, number]) => void;

/**
 * The plan of a forward convolution (Conv2D, or FusedConv2D with `fused`, which has no direct
 * loop). CATDOG_WASM_WINOGRAD=3/4/6 forces that tile, 0 rules Winograd out.
 */
export function forwardPlan(
  backend: WasmBackend,
  info: tf.backend_util.Conv2DInfo,
  fused: boolean,
  run: ProxyRun,
): KernelPlan {
  const threads = threadCount(backend);
  const override = winogradOverride();
  const wino = override !== 0 && winogradApplies(info);
  if (wino && override !== 'auto') return { kind: 'winograd', m: override, block: defaultWinogradBlock(info) };
  const tile = winogradTileSize(backend, info);
  // Fused layers have the direct loop only when pointwise (its one call per pixel then sees the whole sum, so bias
  // and activation go in its stores); a pointwise layer reads one 16-column strip of its weights at a time, so the
  // tap-size caps (a whole tap's block kept hot) do not apply to it.
  const pointwise = isPointwise(info);
  const cap = (limit: number) => (pointwise ? Infinity : limit);
  const defaultPlan: KernelPlan = tile
    ? { kind: 'winograd', m: tile, block: defaultWinogradBlock(info) }
    : !fused && directApplies('conv2d', info, cap(DIRECT_MAX_TAP_FLOATS))
      ? { kind: 'direct' }
      : { kind: 'xnnpack' };
  const canDirect = (!fused || pointwise) && directApplies('conv2d', info, cap(TUNED_MAX_TAP_FLOATS));
  if (!wino && !canDirect) return { kind: 'xnnpack' };
  return choosePlan({
    family: 'conv2d',
    shape: `${shapeKey(info)}${fused ? ' fused' : ''}`,
    threads,
    ready: () => workersReady(backend, threads),
    defaultPlan,
    applicable: (p) =>
      p.kind === 'xnnpack' || (p.kind === 'direct' && canDirect) || (p.kind === 'winograd' && wino && p.block >= 1),
    normalize: (p) => (p.kind === 'winograd' && p.block === 0 ? { ...p, block: defaultWinogradBlock(info) } : p),
    candidates: (stage, winner) => {
      if (stage === 0) {
        return onProxy(info, threads, PROXY_MACS, run, [
          { kind: 'xnnpack' },
          { kind: 'direct' },
          ...winogradTileCandidates(
            (m) => convCost(info, m, threads),
            () => defaultWinogradBlock(info),
          ),
        ]);
      }
      return winner?.kind === 'winograd' ? winogradBlockCandidates(info, threads, winner, run) : [];
    },
  });
}

/** `plans` as candidates, each timed on one proxy of the layer of about `macs` multiply-adds (proxyInputShape). */
function onProxy(
  info: tf.backend_util.Conv2DInfo,
  threads: number,
  macs: number,
  run: ProxyRun,
  plans: KernelPlan[],
): Candidate[] {
  const x = proxyInputShape(info, threads, macs);
  return plans.map((plan) => ({ plan, run: () => run(plan, x) }));
}

/**
 * Winograd tiles the cost model puts within 1.5× of its best (it misjudges machines by less than that; a 9×9 map in
 * F6 tiles, mostly padding, is not worth timing), each with the layer's default block.
 */
function winogradTileCandidates(cost: (m: WinogradTile) => number, block: (m: WinogradTile) => number): KernelPlan[] {
  const costs = ([3, 4, 6] as const).map(cost);
  const cheapest = Math.min(...costs);
  return ([3, 4, 6] as const)
    .filter((_, i) => costs[i]! <= TILE_COST_SPREAD * cheapest)
    .map((m) => ({ kind: 'winograd', m, block: block(m) }));
}

/**
 * Blocks of tiles: half, same, 2× and 4× the winning Winograd plan's, where the (larger) proxy of the layer `info`
 * has enough tiles for them to differ; `tiling`: the correlation whose output is tiled (the input gradient's is
 * over dy, not the layer's).
 */
function winogradBlockCandidates(
  info: tf.backend_util.Conv2DInfo,
  threads: number,
  winner: KernelPlan & { kind: 'winograd' },
  run: ProxyRun,
  tiling: tf.backend_util.Conv2DInfo = info,
): Candidate[] {
  const x = proxyInputShape(info, threads, PROXY_MACS * BLOCK_PROXY_SCALE);
  const proxyTiles = winogradTiles(
    { ...tiling, batchSize: x[0], outHeight: Math.min(tiling.outHeight, x[1]) },
    winner.m,
  );
  const blocks = [winner.block, winner.block >> 1, winner.block * 2, winner.block * 4].filter(
    (b, i, all) => b >= 16 && b <= 1024 && all.indexOf(b) === i && (i === 0 || b * threads <= proxyTiles),
  );
  if (blocks.length < 2) return [];
  return blocks.map((block): Candidate => {
    const plan: KernelPlan = { ...winner, block };
    return { plan, run: () => run(plan, x) };
  });
}

/**
 * The plan of a convolution gradient. backprop-input: `direct` (the SIMD loop, threads taking images), `xnnpack`
 * (the rewrite onto the backend's forward conv) or, for 3×3 stride-1 layers, `winograd` (the Winograd correlation
 * of dy with the flipped filter, winograd-input-grad.ts; CATDOG_WASM_WINOGRAD=3/4/6 forces that tile, 0 rules it
 * out); backprop-filter: filterGradientPlan (below). Pointwise layers keep their own path and have no plan.
 */
export function gradientPlan(
  backend: WasmBackend,
  family: 'backprop-input' | 'backprop-filter',
  info: tf.backend_util.Conv2DInfo,
  run: ProxyRun,
): KernelPlan {
  if (family === 'backprop-filter') return filterGradientPlan(backend, info, run);
  const threads = threadCount(backend);
  const canDirect = directApplies(family, info, TUNED_MAX_TAP_FLOATS);
  // The Winograd correlation of dy this gradient equals, where the Winograd kernels run it.
  const override = winogradOverride();
  const wino = override !== 0 ? inputGradWinogradInfo(info) : null;
  if (wino && override !== 'auto' && override !== 0)
    return { kind: 'winograd', m: override, block: defaultWinogradBlock(wino) };
  if (!canDirect && !wino) return { kind: 'xnnpack' };
  const tile = wino ? winogradTileSize(backend, wino, info) : 0;
  const defaultPlan: KernelPlan =
    tile && wino
      ? { kind: 'winograd', m: tile, block: defaultWinogradBlock(wino) }
      : directApplies(family, info, DIRECT_MAX_TAP_FLOATS)
        ? { kind: 'direct' }
        : { kind: 'xnnpack' };
  return choosePlan({
    family,
    shape: shapeKey(info),
    threads,
    ready: () => workersReady(backend, threads),
    defaultPlan,
    applicable: (p) =>
      p.kind === 'xnnpack' ||
      (p.kind === 'direct' && canDirect) ||
      (p.kind === 'winograd' && wino !== null && p.block >= 1),
    normalize: (p) =>
      p.kind === 'winograd' && p.block === 0 && wino ? { ...p, block: defaultWinogradBlock(wino) } : p,
    candidates: (stage, winner) => {
      if (stage === 0) {
        // Where Winograd runs, on the block stage's larger proxy, as the filter gradient (below): its costs per call
        // (the flipped filter and its transform) weigh on a proxy of a few tiles as they never do on a batch.
        return onProxy(info, threads, wino ? PROXY_MACS * BLOCK_PROXY_SCALE : PROXY_MACS, run, [
          { kind: 'direct' },
          { kind: 'xnnpack' },
          ...(wino
            ? winogradTileCandidates(
                (m) => convCost(wino, m, threads),
                () => defaultWinogradBlock(wino),
              )
            : []),
        ]);
      }
      return winner?.kind === 'winograd' && wino ? winogradBlockCandidates(info, threads, winner, run, wino) : [];
    },
  });
}

// ---------------------------------------------------------------------------------------------
// backprop-filter

/**
 * The plan of a filter gradient: `direct`, `direct-taps`, `xnnpack` (as gradientPlan), and for 3×3 stride-1 layers
 * `winograd3|4|6:block=n` (winograd-filter-grad.ts), its block refined as the forward's. The default (no tuning) is
 * the cost model's tile, else the direct loop where its tap block fits, else XNNPACK. CATDOG_WASM_WINOGRAD=3/4/6
 * forces that tile, 0 rules Winograd out.
 */
function filterGradientPlan(backend: WasmBackend, info: tf.backend_util.Conv2DInfo, run: ProxyRun): KernelPlan {
  const threads = threadCount(backend);
  const override = winogradOverride();
  const wino = override !== 0 && winogradApplies(info);
  const block = (m: WinogradTile) => defaultFilterGradBlock(info, m);
  if (wino && override !== 'auto') return { kind: 'winograd', m: override, block: block(override) };
  const canDirect = directApplies('backprop-filter', info, TUNED_MAX_TAP_FLOATS);
  if (!wino && !canDirect) return { kind: 'xnnpack' };
  const tile = winogradFilterGradTileSize(backend, info);
  const defaultPlan: KernelPlan = tile
    ? { kind: 'winograd', m: tile, block: block(tile) }
    : directApplies('backprop-filter', info, DIRECT_MAX_TAP_FLOATS)
      ? { kind: 'direct' }
      : { kind: 'xnnpack' };
  return choosePlan({
    family: 'backprop-filter',
    shape: shapeKey(info),
    threads,
    ready: () => workersReady(backend, threads),
    defaultPlan,
    applicable: (p) =>
      p.kind === 'xnnpack' ||
      ((p.kind === 'direct' || p.kind === 'direct-taps') && canDirect) ||
      (p.kind === 'winograd' && wino && p.block >= 1),
    normalize: (p) => (p.kind === 'winograd' && p.block === 0 ? { ...p, block: block(p.m) } : p),
    candidates: (stage, winner) => {
      if (stage === 0) {
        // Where Winograd runs, on the larger proxy of the block stage: its costs per call (each thread's partial
        // products M assigned, then all of them transformed: 2.4 MB a thread at 128 → 128 channels) weigh on a
        // proxy of a few tiles as they never do on a batch (tuned on the 3e7 proxy, the convnet's 17×17×128 → 128
        // layer went to direct-taps, 2× slower on the batch than Winograd).
        return onProxy(info, threads, wino ? PROXY_MACS * BLOCK_PROXY_SCALE : PROXY_MACS, run, [
          { kind: 'direct' },
          { kind: 'direct-taps' },
          { kind: 'xnnpack' },
          ...(wino ? winogradTileCandidates((m) => filterGradCost(info, m, threads), block) : []),
        ]);
      }
      return winner?.kind === 'winograd' ? winogradBlockCandidates(info, threads, winner, run) : [];
    },
  });
}
