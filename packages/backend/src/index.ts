// @catdog/backend: tfjs backend selection and the wasm training kernels.
export { initBackend, BACKEND_REQUESTS } from './select.js';
export type { BackendRequest, BackendChoice, InitBackendOptions } from './select.js';
export { BackendUnavailableError } from './errors.js';
export {
  registerWasmTrainingKernels,
  wasmTrainingKernelNames,
  wasmSimdKernelsLoaded,
  wasmSimdWorkers,
  wasmWinogradTileSize,
} from './wasm-kernels.js';
export { wasmFusedMultiplyAdd } from './simd-kernels.js';
export { rmsprop, RMSPropOptimizer } from './rmsprop.js';
export {
  kernelPlans,
  cpuModel,
  planCacheDir,
  machineKey,
  autotuneEnabled,
  forcedPlans,
  resetKernelPlans,
  PLAN_CACHE_FILE,
  PLAN_FAMILIES,
} from './autotune.js';
export type { KernelPlan, PlanFamily, PlanRecord, PlanSource } from './autotune.js';
