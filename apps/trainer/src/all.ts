// trainer all: the book's five strategies one after another into one folder of runs (<out>/<strategy>), then the
// comparison report beside them. A run that completed (metrics.json) is skipped, an interrupted one (a
// checkpoint) continues with --resume's machinery, so rerunning the command after a failure or a kill finishes
// the job without redoing what is done.
import { join } from 'node:path';
import { UsageError, UserError } from '@catdog/errors';
import { BOOK_ACCURACY } from '@catdog/report';
import {
  isStrategy,
  resolveConfig,
  RunDir,
  STRATEGY_NAMES,
  train,
  type Strategy,
  type TrainConfig,
  type TrainResult,
} from '@catdog/training';

/** `--skip a,b`: strategy names, checked. */
export function parseSkip(text: string): Strategy[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const n of names)
    if (!isStrategy(n)) throw new UsageError(`--skip: unknown strategy "${n}" (valid: ${STRATEGY_NAMES.join(', ')})`);
  return names as Strategy[];
}

/** `<out>/<strategy>` for a local folder or an s3:// prefix. */
export function runLocation(out: string, strategy: Strategy): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(out) ? `${out.replace(/\/+$/, '')}/${strategy}` : join(out, strategy);
}

export type RunStatus = 'complete' | 'interrupted' | 'new';

/** What `<out>/<strategy>` holds: a finished run, one to resume, or nothing yet. */
export async function runStatus(location: string, strategy: Strategy): Promise<RunStatus> {
  const dir = RunDir.open(location);
  const config = await dir.readConfig();
  if (config && config.strategy !== strategy)
    throw new UserError(
      `${dir.url} holds a run of the ${config.strategy} strategy, not ${strategy}: trainer all keeps each strategy in <out>/<strategy>; choose another --out`,
      { code: 'bad-run' },
    );
  if (await dir.readMetrics()) return 'complete';
  // A folder with only config.json failed before its first checkpoint: nothing to resume, it starts afresh.
  return (await dir.readCheckpointState()) ? 'interrupted' : 'new';
}

export interface AllOptions {
  /** The folder of runs (local or s3://). */
  out: string;
  /** Settings for every strategy's run (data, preset, backend, …); each strategy adds its own defaults. */
  flags: Partial<TrainConfig>;
  skip: Strategy[];
  log(line: string): void;
  /** After each run that trained now (e.g. its curves). */
  afterTrain?(result: TrainResult): Promise<void>;
}

export interface AllRun {
  strategy: Strategy;
  location: string;
  /** What this invocation did with it. */
  action: 'trained' | 'resumed' | 'already complete' | 'skipped';
}

/** Runs the strategies in the book's order into `<out>/<strategy>`; returns what happened to each. */
export async function trainAll(o: AllOptions): Promise<AllRun[]> {
  const done: AllRun[] = [];
  for (const strategy of STRATEGY_NAMES) {
    const location = runLocation(o.out, strategy);
    if (o.skip.includes(strategy)) {
      done.push({ strategy, location, action: 'skipped' });
      continue;
    }
    const status = await runStatus(location, strategy);
    if (status === 'complete') {
      o.log(`all: ${strategy}: ${location} already complete, not run again`);
      done.push({ strategy, location, action: 'already complete' });
      continue;
    }
    const resume = status === 'interrupted';
    o.log(`all: ${strategy}: ${resume ? 'resuming the interrupted run in' : 'training into'} ${location}`);
    const cfg = resolveConfig({ strategy, flags: { ...o.flags, out: location, resume } });
    const result = await train(cfg);
    await o.afterTrain?.(result);
    done.push({ strategy, location, action: resume ? 'resumed' : 'trained' });
  }
  return done;
}

/** One line per strategy: what was done, test accuracy beside the book's, wall time (from each run's metrics.json). */
export async function summaryTable(runs: AllRun[]): Promise<string> {
  const rows = [['strategy', 'this time', 'test acc', 'the book', 'wall time']];
  for (const r of runs) {
    const m = r.action === 'skipped' ? null : await RunDir.open(r.location).readMetrics();
    rows.push([
      r.strategy,
      r.action,
      m ? `${(m.test.accuracy * 100).toFixed(1)}%` : '—',
      `~${Math.round(BOOK_ACCURACY[r.strategy]! * 100)}%`,
      m ? formatWall(m.wallSeconds) : '—',
    ]);
  }
  const widths = rows[0]!.map((_, j) => Math.max(...rows.map((row) => row[j]!.length)));
  return rows
    .map((row) =>
      row
        .map((c, j) => c.padEnd(widths[j]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const formatWall = (s: number) =>
  s >= 60 ? `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, '0')} s` : `${s.toFixed(1)} s`;
