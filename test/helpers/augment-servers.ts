// `augment serve` as a real subprocess on 127.0.0.1, resolved once it prints its listening line: the one way the
// service tests and the benchmarks (tools/bench) start augmentation servers. Standalone (no test fixtures), so the
// benchmarks can import it.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CLI } from './fixtures.js';

const projectRoot = fileURLToPath(new URL('../..', import.meta.url));

export interface AugmentServeOptions {
  /** The shared token's file (--token-file); none: the server accepts any call (loopback only). */
  tokenFile?: string;
  /** Worker threads (--workers). Default 1. */
  workers?: number;
  /** Port to listen on; 0 (the default) takes a free one. */
  port?: number;
  /** More `augment serve` flags, e.g. ['--memory-budget', '0']. */
  args?: string[];
  /** Flags for node itself, e.g. ['--cpu-prof']. */
  nodeArgs?: string[];
  /** 'inherit' passes the server's stderr through (benchmarks); 'pipe' (the default) keeps it for stderr(). */
  stderr?: 'pipe' | 'inherit';
  env?: NodeJS.ProcessEnv;
}

export interface AugmentServeProcess {
  process: ChildProcess;
  /** 127.0.0.1:<port> */
  address: string;
  port: number;
  /** What the server wrote to stdout / stderr so far (stderr: empty when inherited). */
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends `signal` (default SIGTERM) unless the process has exited; resolves once it has. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `augment serve --host 127.0.0.1`; rejects (with its stderr) if it exits before listening. */
export function startAugmentServe(options: AugmentServeOptions = {}): Promise<AugmentServeProcess> {
  const args = [
    ...(options.nodeArgs ?? []),
    CLI.augment,
    'serve',
    '--port',
    String(options.port ?? 0),
    '--host',
    '127.0.0.1',
    '--workers',
    String(options.workers ?? 1),
    ...(options.tokenFile ? ['--token-file', options.tokenFile] : []),
    ...(options.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    cwd: projectRoot,
    stdio: ['ignore', 'pipe', options.stderr ?? 'pipe'],
    env: options.env ?? process.env,
  });
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const stop = (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  return new Promise((resolve, reject) => {
    let listening = false;
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
      const m = /augment serve listening 127\.0\.0\.1:(\d+)/.exec(out);
      if (m && !listening) {
        listening = true;
        const port = Number(m[1]);
        resolve({
          process: child,
          address: `127.0.0.1:${port}`,
          port,
          stdout: () => out,
          stderr: () => err,
          exited,
          stop,
        });
      }
    });
    child.on('error', reject);
    void exited.then(({ code, signal }) => {
      if (!listening) reject(new Error(`augment serve exited with ${code ?? signal} before listening: ${err}`));
    });
  });
}

/** Stops every server still running with SIGKILL (a test's after hook: nothing left behind). */
export function killAugmentServes(servers: Iterable<AugmentServeProcess>): void {
  for (const s of servers) if (s.process.exitCode === null && s.process.signalCode === null) s.process.kill('SIGKILL');
}
