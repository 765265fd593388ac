// What `trainer:report` runs: a comparison page for a directory of runs, or one run's page.
import { join, resolve } from 'node:path';
import { UserError } from '@catdog/errors';
import { writeComparisonReport } from './comparison.js';
import { writeRunReport } from './run-report.js';

export interface ReportCommandOptions {
  /** A directory holding run directories: writes the comparison page (and each run's report.html). */
  runs?: string;
  /** One run directory: writes that run's page. */
  run?: string;
  /** The HTML file to write (default `<runs>/report.html` or `<run>/report.html`). */
  out?: string;
  /** The book's smoothing factor for the curves (default 0). */
  smoothing?: number;
  /** Relative paths are resolved against this directory (default INIT_CWD, then the process's cwd). */
  cwd?: string;
}

export interface ReportCommandResult {
  out: string;
  /** Run directories in the report, best first. */
  runs: string[];
  /** Problems that did not stop the report. */
  warnings: string[];
}

export async function runReportCommand(options: ReportCommandOptions): Promise<ReportCommandResult> {
  const cwd = options.cwd ?? process.env.INIT_CWD ?? process.cwd();
  const abs = (p: string) => resolve(cwd, p);
  if (options.runs && options.run)
    throw new UserError('give either --runs <dir> (compare runs) or --run <dir> (one run), not both');
  if (options.out !== undefined && !/\.html?$/i.test(options.out))
    throw new UserError(`--out must name an .html file, got ${options.out}`);
  if (options.run) {
    const out = await writeRunReport(abs(options.run), {
      out: options.out ? abs(options.out) : undefined,
      smoothing: options.smoothing,
    });
    return { out, runs: [abs(options.run)], warnings: [] };
  }
  if (!options.runs) throw new UserError('missing --runs <dir> (a directory holding run directories) or --run <dir>');
  const runsDir = abs(options.runs);
  const result = await writeComparisonReport(runsDir, options.out ? abs(options.out) : join(runsDir, 'report.html'), {
    smoothing: options.smoothing,
  });
  return { out: result.out, runs: result.runs, warnings: result.warnings };
}
