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
  /Failed to (?:grow|allocate)/i,
  /Aborted\(OOM\)/,
  /Cannot enlarge memory/i,
  /Requested \d+ bytes/i,
];

const describe = (err: unknown) => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));

export function isOutOfMemory(err: unknown): boolean {
  return !(err instanceof UserError) && OOM_PATTERNS.some((p) => p.test(describe(err)));
}

/** A JS stack overflow (RangeError: Maximum call stack size exceeded): deep recursion, not a lack of memory. */
export function isStackOverflow(err: unknown): boolean {
  return err instanceof RangeError && /Maximum call stack size/i.test(err.message);
}

/**
 * Turns resource failures of tfjs / wasm into UserErrors saying what to do: allocation failures (code
 * 'out-of-memory') name the settings to lower; a stack overflow (code 'stack-overflow') is not helped by smaller
 * batches, so it says where it came from instead. Other errors pass through unchanged.
 */
export function explainOutOfMemory(
  err: unknown,
  ctx: { batchSize: number; inputSize: number; workers: number },
): unknown {
  const first = (err instanceof Error ? err.message : String(err)).split('\n')[0];
  if (isStackOverflow(err)) {
    return new UserError(
      `stack overflow (${first}): a recursion too deep for the JavaScript stack, not a lack of memory; rerun with CATDOG_DEBUG=1 for the stack and report it (node --stack-size=<kB> raises the limit)`,
      { code: 'stack-overflow', cause: err },
    );
  }
  if (!isOutOfMemory(err)) return err;
  return new UserError(
    `out of memory (${first}): lower --batch-size (now ${ctx.batchSize}), --input-size (now ${ctx.inputSize}) or --workers (now ${ctx.workers})`,
    { code: 'out-of-memory', cause: err },
  );
}
