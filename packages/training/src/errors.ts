// Training-specific failures, told to the user in one line with what to do about them.
import { UserError } from '@catdog/errors';

/** The loss became NaN or infinite: training stopped, the last good checkpoint is kept. */
export class NanLossError extends UserError {
  constructor(message: string) {
    super(message, { code: 'nan-loss' });
    this.name = 'NanLossError';
  }
}

const OOM_PATTERNS = [
  /out of memory/i,
  /cannot allocate/i,
  /allocation failed/i,
  /array buffer allocation failed/i,
  /Invalid typed array length/i,
  /Invalid array buffer length/i,
  /WebAssembly\.Memory/i,
  /memory access out of bounds/i,
  /Maximum call stack size/i,
  /Failed to (?:grow|allocate)/i,
  /Aborted\(OOM\)/,
  /Cannot enlarge memory/i,
  /Requested \d+ bytes/i,
];

export function isOutOfMemory(err: unknown): boolean {
  if (err instanceof UserError) return false;
  const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return OOM_PATTERNS.some((p) => p.test(msg));
}

/** Wraps allocation failures of tfjs / wasm into a UserError that says what to lower. */
export function explainOutOfMemory(err: unknown, ctx: { batchSize: number; inputSize: number; workers: number }): unknown {
  if (!isOutOfMemory(err)) return err;
  const first = (err instanceof Error ? err.message : String(err)).split('\n')[0];
  return new UserError(
    `out of memory (${first}): lower --batch-size (now ${ctx.batchSize}), --input-size (now ${ctx.inputSize}) or --workers (now ${ctx.workers})`,
    { cause: err },
  );
}
