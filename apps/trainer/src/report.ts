#!/usr/bin/env node
// report: HTML reports of training runs, curves from a history.json, diagrams from a model.json.
//   report --runs <dir> [--out <file.html>]          compare every run under <dir> (and write each run's page)
//   report --run <dir> [--out <file.html>]           one run's page
//   report curves --history <history.json> --out <dir> [--smooth 0.8]
//   report model --model <model.json> --out <dir> [--summary <summary.txt>] [--no-shapes]
// Mounted as `nx run trainer:report`; relative paths resolve against INIT_CWD (the user's directory).
// A thin CLI over @catdog/report.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { UserError, reportError } from '@catdog/errors';
import { reportRuns } from './report-runs.js';
// @catdog/report (vega, sharp, Graphviz, tfjs) loads only when a command runs, so usage errors are instant.
const loadReport = () => import('@catdog/report');

const cwd = process.env.INIT_CWD ?? process.cwd();
const abs = (p: string) => resolve(cwd, p);

function smoothing(value: string): number {
  const x = Number(value);
  if (!Number.isFinite(x) || x < 0 || x >= 1)
    throw new InvalidArgumentError('expected a factor in [0, 1), e.g. 0.8 as in the book');
  return x;
}

const program = new Command('report')
  .description('Self-contained HTML reports of training runs: curves, model diagrams, comparison of strategies')
  .enablePositionalOptions()
  .option('--runs <dir>', 'directory holding run directories: write a page comparing them')
  .option('--run <dir>', 'one run directory: write its page')
  .option('--out <file.html>', 'HTML file to write (default <dir>/report.html)')
  .option('--smooth <factor>', "smooth the curves with the book's exponential factor (0.8)", smoothing)
  .action(async (opts: { runs?: string; run?: string; out?: string; smooth?: number }) => {
    if (!opts.runs && !opts.run) {
      program.error('error: missing --runs <dir> (a directory holding run directories) or --run <dir>', {
        exitCode: 2,
      });
    }
    const result = await reportRuns({ runs: opts.runs, run: opts.run, out: opts.out, smoothing: opts.smooth, cwd });
    for (const w of result.warnings) console.error(`warning: ${w}`);
    console.log(`wrote ${result.out} (${result.runs} run${result.runs === 1 ? '' : 's'})`);
  });

program
  .command('curves')
  .description('training/validation accuracy and loss charts (SVG and PNG) from a history.json')
  .requiredOption('--history <history.json>', 'the history file of a run')
  .requiredOption('--out <dir>', 'directory to write curves/accuracy.{svg,png} and curves/loss.{svg,png} into')
  .option('--smooth <factor>', "the book's exponential smoothing factor (0.8); default off", smoothing)
  .option('--title <text>', 'subtitle of the charts, e.g. the run name')
  .action(async (opts: { history: string; out: string; smooth?: number; title?: string }) => {
    const { readHistory, writeCurves } = await loadReport();
    const history = await readHistory(abs(opts.history));
    const files = await writeCurves(history!, abs(opts.out), { smoothing: opts.smooth ?? 0, title: opts.title });
    for (const f of files) console.log(`wrote ${f}`);
  });

program
  .command('model')
  .description('architecture diagram (like keras plot_model with show_shapes) from a tfjs model.json')
  .requiredOption('--model <model.json>', 'tfjs layers model.json (or a file holding just its modelTopology)')
  .requiredOption('--out <dir>', 'directory to write model.svg, model.png and model.dot into')
  .option('--summary <summary.txt>', 'also copy this Keras-style summary to <dir>/summary.txt')
  .option('--no-shapes', 'draw layer names only')
  .action(async (opts: { model: string; out: string; summary?: string; shapes: boolean }) => {
    let summary: string | undefined;
    if (opts.summary) {
      try {
        summary = await readFile(abs(opts.summary), 'utf8');
      } catch (err) {
        throw new UserError(
          `${abs(opts.summary)}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
        );
      }
    }
    const { writeModelViews } = await loadReport();
    const files = await writeModelViews(abs(opts.model), abs(opts.out), { showShapes: opts.shapes, summary });
    for (const f of files) console.log(`wrote ${f}`);
  });

program.exitOverride();
for (const cmd of program.commands) cmd.exitOverride();

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version exit 0; usage errors (already printed by commander) exit 2.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  process.exit(reportError(err));
}
