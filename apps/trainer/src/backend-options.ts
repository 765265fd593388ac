import { Option, InvalidArgumentError, type Command } from 'commander';
// The trainer's --backend and --threads options. They live with the CLI rather than in
// @catdog/backend so that the backend package has no command-line (commander) dependency.
import { BACKEND_REQUESTS, type BackendRequest } from '@catdog/backend';

/** Options every CLI takes, as commander parses them. */
export interface BackendCliOptions {
  backend: BackendRequest;
  threads?: number;
}

function parseThreads(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer.');
  return n;
}

/**
 * Adds `--backend <auto|tensorflow|wasm|cpu>` (default auto) and `--threads <n>` to a commander
 * command, so every CLI takes them identically. Pass the parsed values to `initBackend`.
 */
export function addBackendOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--backend <name>', 'tfjs backend: auto picks tfjs-node-gpu, then tfjs-node, then wasm, then cpu')
        .choices([...BACKEND_REQUESTS])
        .default('auto'),
    )
    .addOption(
      new Option('--threads <n>', 'threads for the backend (default: all available cores)').argParser(parseThreads),
    );
}
