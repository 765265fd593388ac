// Identity without a copy.
import { type KernelFn, type TensorInfo, fallback } from './base.js';

// Identity shares the input's buffer (tensors are immutable; the cpu backend does the same)
// instead of copying it. tfjs-layers reads every weight through Identity on every step.

export function identity({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x } = inputs as { x: TensorInfo };
  if (x.dtype === 'string') return fallback('Identity')({ inputs, backend, attrs });
  (backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}
