// One self-contained HTML page comparing every run under a directory: which strategy won and by how much,
// the numbers side by side, every run's curves and its misclassified images.
import { dirname, join, relative, resolve } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { UserError } from '@catdog/errors';
import { renderVegaLiteSvg } from './curves.js';
import { assertOffline, esc, formatNumber, formatPercent, formatSeconds, htmlPage, svgUri } from './html.js';
import { findRunDirs, loadRun, writeFileAtomic, type RunData } from './run-dir.js';
import {
  chartsHtml,
  curveImages,
  misclassifiedHtml,
  runLabel,
  summarizeRun,
  writeLoadedRunReport,
  type RunSummary,
} from './run-report.js';

export interface ComparisonOptions {
  /** Also write each run's own page as `<run>/report.html` (default true). */
  runPages?: boolean;
  /** The book's smoothing factor for the curves (default 0). */
  smoothing?: number;
  /** Misclassified images shown per run on the comparison page (default 48). */
  maxMisclassified?: number;
}

export interface ComparisonResult {
  /** Run directories found, in the page's order (best first). */
  runs: string[];
  /** Display names of the runs, same order. */
  names: string[];
  out: string;
  /** Per-run pages written. */
  runPages: string[];
  /** Problems that did not stop the comparison (a run page that could not be written). */
  warnings: string[];
}

/**
 * What Deep Learning with Python (1st ed., ch. 5) reports per strategy on the same 2,000/1,000/1,000 split:
 * validation accuracy read off its curves, test accuracy for finetune; VGG16 for the transfer strategies.
 */
export const BOOK_ACCURACY: Readonly<Record<string, number>> = {
  scratch: 0.7,
  augmented: 0.82,
  extract: 0.9,
  'extract-augmented': 0.96,
  finetune: 0.97,
};

/** Best first: by test accuracy, runs without test metrics after them by best validation accuracy, then by name. */
export function rankRuns(summaries: RunSummary[]): RunSummary[] {
  const key = (s: RunSummary) => [s.testAcc ?? -1, s.bestValAcc ?? -1] as const;
  return [...summaries].sort((a, b) => {
    const [ta, va] = key(a);
    const [tb, vb] = key(b);
    return tb - ta || vb - va || a.name.localeCompare(b.name);
  });
}

/** The sentence at the top: who won, with what, and by how many points over the runner-up. */
export function verdict(ranked: RunSummary[]): string {
  if (ranked.length === 0) return 'No runs.';
  const tested = ranked.filter((s) => s.testAcc !== null);
  const pts = (a: number, b: number) => `${(a - b) * 100 >= 0 ? '+' : ''}${((a - b) * 100).toFixed(1)} points`;
  if (tested.length > 0) {
    const [first, second] = tested;
    const head = `${runLabel(first!)} won with ${formatPercent(first!.testAcc)} test accuracy`;
    if (!second) {
      return ranked.length === 1
        ? `${runLabel(first!)} reached ${formatPercent(first!.testAcc)} test accuracy (the only run).`
        : `${head}; the other runs have no test metrics yet.`;
    }
    return `${head}, ${pts(first!.testAcc!, second.testAcc!)} over ${runLabel(second)} at ${formatPercent(second.testAcc)}.`;
  }
  const validated = ranked.filter((s) => s.bestValAcc !== null);
  if (validated.length === 0) return 'No run has test or validation accuracy yet.';
  const [first, second] = validated;
  const head = `No run has test metrics yet; by best validation accuracy ${runLabel(first!)} leads with ${formatPercent(first!.bestValAcc)}`;
  return second ? `${head}, ${pts(first!.bestValAcc!, second.bestValAcc!)} over ${runLabel(second)}.` : `${head}.`;
}

function tableHtml(ranked: RunSummary[], pageLinks: Map<string, string>): string {
  const head = [
    '#',
    'run',
    'strategy',
    'base',
    'backend',
    'epochs',
    'best val acc',
    'test acc',
    'the book',
    'test loss',
    'wall time',
    'images/s',
  ];
  const textual = new Set(['run', 'strategy', 'base', 'backend']);
  const numeric = new Set(head.filter((h) => !textual.has(h)));
  const best = ranked[0]?.testAcc ?? null;
  const rows = ranked.map((s, i) => {
    const link = pageLinks.get(s.dir);
    const name = link ? `<a href="${esc(link)}">${esc(s.name)}</a>` : esc(s.name);
    const epochs =
      s.epochs === null
        ? '—'
        : s.plannedEpochs && s.plannedEpochs !== s.epochs
          ? `${s.epochs} / ${s.plannedEpochs}`
          : String(s.epochs);
    const cells = [
      String(i + 1),
      name,
      esc(s.strategy ?? '—'),
      esc(s.base ?? '—'),
      esc(s.backend ?? '—'),
      esc(epochs),
      esc(formatPercent(s.bestValAcc)),
      esc(formatPercent(s.testAcc)),
      s.strategy && s.strategy in BOOK_ACCURACY ? `~${Math.round(BOOK_ACCURACY[s.strategy]! * 100)}%` : '—',
      esc(formatNumber(s.testLoss)),
      esc(formatSeconds(s.wallSeconds)),
      esc(formatNumber(s.imagesPerSecond, 1)),
    ];
    const cls = i === 0 && best !== null ? ' class="winner"' : '';
    return `<tr${cls} data-run="${esc(s.name)}">${cells.map((c, j) => `<td${numeric.has(head[j]!) ? ' class="num"' : ''}>${c}</td>`).join('')}</tr>`;
  });
  return `<table class="runs"><thead><tr>${head.map((h) => `<th${numeric.has(h) ? ' class="num"' : ''}>${esc(h)}</th>`).join('')}</tr></thead>
<tbody>${rows.join('\n')}</tbody></table>
<p class="note">The book: Deep Learning with Python (1st ed., ch. 5) on the same split of 2,000/1,000/1,000 images, validation accuracy read off its curves (finetune: its test accuracy), VGG16 as the base of the transfer strategies.</p>`;
}

/** Validation accuracy of every run on one chart: the book's progression from strategy to strategy. */
async function overlayChart(runs: RunData[], summaries: Map<string, RunSummary>): Promise<string> {
  const values: { epoch: number; value: number; run: string }[] = [];
  for (const run of runs) {
    const h = run.history;
    const label = `${run.name}: ${runLabel(summaries.get(run.dir)!)}`;
    h?.val_acc?.forEach((v, i) => {
      if (v !== null) values.push({ epoch: h.epoch[i]!, value: v, run: label });
    });
  }
  if (values.length === 0) return '';
  const spec = {
    $schema: 'vega-lite/v6.json',
    width: 900,
    height: 360,
    autosize: { type: 'fit', contains: 'padding' },
    background: 'white',
    padding: 8,
    title: 'Validation accuracy of every run',
    data: { values },
    mark: { type: 'line', point: true, strokeWidth: 2 },
    encoding: {
      x: {
        field: 'epoch',
        type: 'quantitative',
        title: 'Epochs',
        axis: { tickMinStep: 1, format: 'd' },
        scale: { zero: false, nice: false },
      },
      y: { field: 'value', type: 'quantitative', title: 'Validation accuracy', scale: { zero: false } },
      color: { field: 'run', type: 'nominal', title: 'run', legend: { orient: 'bottom', columns: 2, labelLimit: 400 } },
    },
    config: { font: 'sans-serif' },
  } as unknown as TopLevelSpec;
  const svg = await renderVegaLiteSvg(spec);
  return `<h2>Validation accuracy, all runs</h2><div class="charts"><img src="${svgUri(svg)}" alt="validation accuracy of every run"></div>`;
}

/**
 * Finds every run under `runsDir` (a directory with config.json or history.json, also one level deeper) and
 * writes one self-contained HTML page comparing them to `outFile`; also writes `<run>/report.html` per run.
 */
export async function writeComparisonReport(
  runsDir: string,
  outFile: string,
  options: ComparisonOptions = {},
): Promise<ComparisonResult> {
  if (options.smoothing !== undefined && !(options.smoothing >= 0 && options.smoothing < 1)) {
    throw new UserError(`smoothing factor must be in [0, 1), got ${options.smoothing}`);
  }
  const root = resolve(runsDir);
  const dirs = await findRunDirs(root);
  if (dirs.length === 0) {
    throw new UserError(
      `no runs found in ${runsDir} (a run directory holds config.json or history.json; searched it and two levels below)`,
    );
  }
  const runs: RunData[] = [];
  for (const dir of dirs) runs.push(await loadRun(dir, relative(root, dir) || dir.split(/[\\/]/).pop()!));
  const summaries = new Map(runs.map((r) => [r.dir, summarizeRun(r)]));
  const ranked = rankRuns([...summaries.values()]);
  const out = resolve(outFile);

  const pageLinks = new Map<string, string>();
  const runPages: string[] = [];
  const warnings: string[] = [];
  if (options.runPages ?? true) {
    for (const run of runs) {
      try {
        const page = await writeLoadedRunReport(run, { smoothing: options.smoothing });
        runPages.push(page);
        pageLinks.set(run.dir, relative(dirname(out), page).split('\\').join('/'));
      } catch (err) {
        // A read-only run directory must not cost the user the comparison; the page just has no link.
        if (!(err instanceof UserError)) throw err;
        warnings.push(`run page for ${run.name} not written: ${err.message}`);
      }
    }
  }

  const sections: string[] = [];
  for (const s of ranked) {
    const run = runs.find((r) => r.dir === s.dir)!;
    const link = pageLinks.get(run.dir);
    const missed = run.metrics?.test?.misclassified;
    const missedCount = Array.isArray(missed) ? ` (${missed.length})` : '';
    sections.push(`<section class="run" id="run-${esc(encodeURIComponent(s.name))}">
<h2>${esc(s.name)}: ${esc(runLabel(s))}</h2>
<p class="note">test accuracy ${esc(formatPercent(s.testAcc))} · best validation accuracy ${esc(formatPercent(s.bestValAcc))}${s.bestValEpoch !== null ? ` (epoch ${s.bestValEpoch})` : ''} · ${esc(formatSeconds(s.wallSeconds))}${link ? ` · <a href="${esc(link)}">full run report</a>` : ''}</p>
${chartsHtml(await curveImages(run, options.smoothing ?? 0))}
<details><summary>Misclassified test images${esc(missedCount)}</summary>
${await misclassifiedHtml(run, options.maxMisclassified ?? 48)}
</details>
</section>`);
  }

  const body = `<h1>Cats vs dogs: comparison of ${runs.length} run${runs.length === 1 ? '' : 's'}</h1>
<p class="lead">${esc(verdict(ranked))}</p>
<p class="note">Runs found under ${esc(root)}, best first (by test accuracy, then best validation accuracy).</p>
${tableHtml(ranked, pageLinks)}
${await overlayChart(runs, summaries)}
${sections.join('\n')}`;
  const html = htmlPage(`Comparison of ${runs.length} runs`, body);
  assertOffline(html, out);
  await writeFileAtomic(out, html);
  return { runs: ranked.map((s) => s.dir), names: ranked.map((s) => s.name), out, runPages, warnings };
}
