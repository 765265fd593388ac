// Option parsers shared by the benchmarks' command lines (commander prints the error and exits 1).
import { InvalidArgumentError } from 'commander';

export function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer.');
  return n;
}
