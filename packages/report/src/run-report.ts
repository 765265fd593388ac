// One self-contained HTML page per run: config, final and best metrics, curves, summary, diagram, confusion
// matrix and the misclassified test images with the model's predicted probability.
import { readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import sharp from 'sharp';
import { UserError } from '@catdog/errors';
import { curveSpec, renderVegaLiteSvg } from './curves.js';
import { modelDiagram } from './model-diagram.js';
import { assertOffline, dataUri, esc, formatNumber, formatPercent, formatSeconds, htmlPage, svgUri } from './html.js';
import { loadRun, readJsonFile, writeFileAtomic, type MisclassifiedImage, type RunData } from './run-dir.js';

/** The numbers a reader compares runs by, from metrics.json when present, else derived from history.json. */
export interface RunSummary {
  name: string;
  dir: string;
  strategy: string | null;
  base: string | null;
  backend: string | null;
  /** Epochs actually run. */
  epochs: number | null;
  /** Epochs asked for in config.json (differs from `epochs` for stopped or unfinished runs). */
  plannedEpochs: number | null;
  bestValAcc: number | null;
  bestValEpoch: number | null;
  finalAcc: number | null;
  finalValAcc: number | null;
  finalLoss: number | null;
  finalValLoss: number | null;
  testAcc: number | null;
  testLoss: number | null;
  testN: number | null;
  wallSeconds: number | null;
  imagesPerSecond: number | null;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function describe(v: unknown, keys: string[]): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    for (const k of keys) if (typeof o[k] === 'string') return o[k] as string;
  }
  return null;
}

function last(s: (number | null)[] | null | undefined): number | null {
  if (!s) return null;
  for (let i = s.length - 1; i >= 0; i--) if (s[i] !== null) return s[i]!;
  return null;
}

export function summarizeRun(run: RunData): RunSummary {
  const c = run.config ?? {};
  const m = run.metrics ?? {};
  const h = run.history;
  let bestValAcc = num(m.bestValAcc);
  let bestValEpoch: number | null = null;
  if (h?.val_acc) {
    let best = -Infinity;
    h.val_acc.forEach((v, i) => {
      if (v !== null && v > best) {
        best = v;
        bestValEpoch = h.epoch[i]!;
      }
    });
    if (bestValAcc === null && best > -Infinity) bestValAcc = best;
  }
  // metrics.json records the backend that actually ran; config.json may only say what was asked ('auto').
  const backendObj = (m.backend ?? c.backend) as Record<string, unknown> | string | undefined;
  let backend = describe(backendObj, ['name']);
  const threads =
    typeof backendObj === 'object' && typeof backendObj.threads === 'number' ? backendObj.threads : num(c.threads);
  if (backend && threads !== null) backend += ` (${threads} thread${threads === 1 ? '' : 's'})`;
  if (num(m.bestEpoch) !== null) bestValEpoch = num(m.bestEpoch);
  const seconds = h?.seconds?.filter((v): v is number => v !== null) ?? [];
  const ips = h?.images_per_s?.filter((v): v is number => v !== null) ?? [];
  return {
    name: run.name,
    dir: run.dir,
    strategy: describe(c.strategy, ['name']),
    base: describe(c.base, ['name', 'id']),
    backend,
    epochs: num(m.epochs) ?? (h ? h.epoch.length : null),
    plannedEpochs: num(c.epochs),
    bestValAcc,
    bestValEpoch,
    finalAcc: last(h?.acc),
    finalValAcc: last(h?.val_acc),
    finalLoss: last(h?.loss),
    finalValLoss: last(h?.val_loss),
    testAcc: num(m.test?.accuracy),
    testLoss: num(m.test?.loss),
    testN: num(m.test?.n),
    wallSeconds: num(m.wallSeconds) ?? (seconds.length ? seconds.reduce((a, b) => a + b, 0) : null),
    imagesPerSecond: num(m.imagesPerSecond) ?? (ips.length ? ips.reduce((a, b) => a + b, 0) / ips.length : null),
  };
}

/** "finetune (mobilenet_v2)" — the strategy and base, or the run's name when the config does not say. */
export function runLabel(s: RunSummary): string {
  if (!s.strategy) return s.name;
  return s.base ? `${s.strategy} (${s.base})` : s.strategy;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** The run's accuracy and loss charts as SVG data URIs (rendered from history.json, so always current). */
export async function curveImages(run: RunData, smoothing = 0): Promise<{ title: string; uri: string }[]> {
  const h = run.history;
  if (!h || h.epoch.length === 0) return [];
  const out: { title: string; uri: string }[] = [];
  for (const metric of ['acc', 'loss'] as const) {
    if (![h[metric], h[`val_${metric}`]].some((s) => s?.some((v) => v !== null))) continue;
    const svg = await renderVegaLiteSvg(curveSpec(h, metric, { title: run.name, smoothing, width: 560, height: 340 }));
    out.push({
      title: metric === 'acc' ? 'Training and validation accuracy' : 'Training and validation loss',
      uri: svgUri(svg),
    });
  }
  return out;
}

export function chartsHtml(charts: { title: string; uri: string }[]): string {
  if (charts.length === 0) return '<p class="note">No epochs recorded yet (history.json missing or empty).</p>';
  return `<div class="charts">${charts.map((c) => `<img src="${c.uri}" alt="${esc(c.title)}" width="560" height="340">`).join('')}</div>`;
}

/** 'cat' / 'dog' from a label (0/1, or a class name) and the run's class names (['cats', 'dogs'] by default). */
function className(label: number | string, classes: string[] = ['cats', 'dogs']): string {
  const name = typeof label === 'number' || /^\d+$/.test(label) ? (classes[Number(label)] ?? String(label)) : label;
  return name.replace(/s$/, '');
}

/** An image of the run (a path relative to it) as an inline <img>; null when absent, a note when unreadable. */
async function embeddedImage(dir: string, relative: string, alt: string, cssClass?: string): Promise<string | null> {
  const path = join(dir, relative);
  if (!resolve(path).startsWith(resolve(dir)) || !(await exists(path))) return null;
  try {
    const thumb = await sharp(path)
      .rotate()
      .resize(150, 150, { fit: 'inside', withoutEnlargement: true })
      .jpeg({ quality: 80 })
      .toBuffer();
    return `<img src="${dataUri('image/jpeg', thumb)}" alt="${esc(alt)}"${cssClass ? ` class="${cssClass}"` : ''}>`;
  } catch (err) {
    return `<div class="missing">unreadable image (${esc((err as Error).message.split('\n')[0])})</div>`;
  }
}

/** Thumbnails of misclassified test images (at most `limit`), each with its true class and predicted P(dog). */
export async function misclassifiedHtml(run: RunData, limit = 200): Promise<string> {
  const list = run.metrics?.test?.misclassified;
  if (!Array.isArray(list))
    return '<p class="note">No misclassified images recorded (metrics.json has no test.misclassified).</p>';
  if (list.length === 0) return '<p class="note">No test image was misclassified.</p>';
  const figures: string[] = [];
  for (const item of list.slice(0, limit) as MisclassifiedImage[]) {
    const key = String(item.key ?? '?');
    const p = num(item.probability);
    const classes = Array.isArray(run.metrics?.test?.classes) ? run.metrics!.test!.classes : undefined;
    const truth = className(item.label, classes);
    // Three or more classes: the predicted class and its probability; two: the sigmoid's P(class 1).
    const multi = typeof item.predicted === 'number';
    const predicted = multi
      ? className(item.predicted!, classes)
      : p === null
        ? '?'
        : className(p >= 0.5 ? 1 : 0, classes);
    const shown = multi ? predicted : className(1, classes);
    const caption = `${key}: a ${truth}, predicted ${predicted} (p(${shown}) = ${p === null ? '?' : p.toFixed(3)})`;
    // The trainer names thumbnails after the key with unsafe characters replaced.
    const img =
      (await embeddedImage(run.dir, item.image ?? join('misclassified', `${key.replace(/[^\w.-]/g, '_')}.jpg`), key)) ??
      '<div class="missing">no thumbnail</div>';
    // The Grad-CAM overlay of the predicted class, when the trainer drew one: where the model looked.
    const heatmap = item.heatmap
      ? await embeddedImage(run.dir, item.heatmap, `${key}: Grad-CAM heatmap of the predicted class`, 'heatmap')
      : null;
    figures.push(
      `<figure${heatmap ? ' class="with-heatmap"' : ''}>${img}${heatmap ?? ''}<figcaption>${esc(caption)}${heatmap ? ' · right: Grad-CAM, where the model looked' : ''}</figcaption></figure>`,
    );
  }
  const more =
    list.length > limit ? `<p class="note">Showing ${limit} of ${list.length} misclassified images.</p>` : '';
  return `<div class="thumbs">${figures.join('')}</div>${more}`;
}

function confusionHtml(run: RunData): string {
  const c = run.metrics?.test?.confusion;
  const k = Array.isArray(c) ? c.length : 0;
  if (k < 2 || !c!.every((r) => Array.isArray(r) && r.length === k && r.every((v) => typeof v === 'number'))) return '';
  const m = c as number[][];
  const classes = Array.isArray(run.metrics?.test?.classes) ? run.metrics!.test!.classes : undefined;
  const names = m.map((_, i) => className(i, classes));
  const matrix = `<h3>Confusion matrix (test; rows: true class)</h3>
<table><tr><th></th>${names.map((n) => `<th class="num">predicted ${esc(n)}</th>`).join('')}</tr>
${m.map((row, i) => `<tr><th>${esc(names[i])}</th>${row.map((v) => `<td class="num">${esc(v)}</td>`).join('')}</tr>`).join('\n')}</table>`;
  // Precision and recall per class (one against the rest), from the matrix itself so older runs get them too.
  const pct = (num: number, den: number) => (den ? formatPercent(num / den) : '—');
  const rows = names.map((n, i) => {
    const support = m[i].reduce((a, b) => a + b, 0);
    const predicted = m.reduce((a, r) => a + r[i], 0);
    return `<tr><th>${esc(n)}</th><td class="num">${esc(pct(m[i][i], predicted))}</td><td class="num">${esc(pct(m[i][i], support))}</td><td class="num">${esc(support)}</td></tr>`;
  });
  return `${matrix}
<h3>Per class (test)</h3>
<table class="per-class"><tr><th></th><th class="num">precision</th><th class="num">recall</th><th class="num">images</th></tr>
${rows.join('\n')}</table>`;
}

function flatten(obj: unknown, prefix = '', out: [string, string][] = []): [string, string][] {
  if (typeof obj === 'object' && obj !== null && !Array.isArray(obj)) {
    for (const [k, v] of Object.entries(obj)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else out.push([prefix, typeof obj === 'string' ? obj : JSON.stringify(obj)]);
  return out;
}

function configHtml(run: RunData): string {
  if (!run.config) return '<p class="note">No config.json.</p>';
  const rows = flatten(run.config).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`);
  return `<table>${rows.join('')}</table>`;
}

function cardsHtml(s: RunSummary): string {
  const epochs =
    s.epochs === null
      ? '—'
      : s.plannedEpochs && s.plannedEpochs !== s.epochs
        ? `${s.epochs} / ${s.plannedEpochs}`
        : String(s.epochs);
  const cards: [string, string][] = [
    ['test accuracy', formatPercent(s.testAcc)],
    ['test loss', formatNumber(s.testLoss)],
    [
      'best validation accuracy',
      `${formatPercent(s.bestValAcc)}${s.bestValEpoch !== null ? ` (epoch ${s.bestValEpoch})` : ''}`,
    ],
    ['final training acc / loss', `${formatPercent(s.finalAcc)} / ${formatNumber(s.finalLoss)}`],
    ['final validation acc / loss', `${formatPercent(s.finalValAcc)} / ${formatNumber(s.finalValLoss)}`],
    ['epochs', epochs],
    ['wall time', formatSeconds(s.wallSeconds)],
    ['images/s', formatNumber(s.imagesPerSecond, 1)],
  ];
  return `<div class="cards">${cards.map(([k, v]) => `<div class="card"><div class="v">${esc(v)}</div><div class="k">${esc(k)}</div></div>`).join('')}</div>`;
}

/** The model diagram: `<run>/model.svg` if the trainer wrote one, else drawn from `<run>/model/model.json`. */
async function diagramHtml(run: RunData): Promise<string> {
  const svgPath = join(run.dir, 'model.svg');
  if (await exists(svgPath))
    return `<img class="diagram" src="${svgUri(await readFile(svgPath, 'utf8'))}" alt="model diagram">`;
  const pngPath = join(run.dir, 'model.png');
  if (await exists(pngPath))
    return `<img class="diagram" src="${dataUri('image/png', await readFile(pngPath))}" alt="model diagram">`;
  const modelJson = join(run.dir, 'model', 'model.json');
  if (!(await exists(modelJson))) return '<p class="note">No model diagram (no model.svg and no model/model.json).</p>';
  const diagram = await modelDiagram(await readJsonFile(modelJson), {});
  const note = diagram.shapeError ? `<p class="note">${esc(diagram.shapeError)}</p>` : '';
  return `<img class="diagram" src="${svgUri(diagram.svg)}" alt="model diagram">${note}`;
}

export interface RunReportOptions {
  /** Where to write the page (default `<run>/report.html`). */
  out?: string;
  /** The book's smoothing factor for the curves (default 0: raw values). */
  smoothing?: number;
  /** At most this many misclassified images (default 200). */
  maxMisclassified?: number;
}

/** The page body of one run (shared by the run page). */
export async function runReportHtml(run: RunData, options: RunReportOptions = {}): Promise<string> {
  const s = summarizeRun(run);
  const preview = join(run.dir, 'augmentation-preview.png');
  const previewHtml = (await exists(preview))
    ? `<h2>Augmentation preview</h2><img class="diagram" src="${dataUri('image/png', await readFile(preview))}" alt="augmentation preview">`
    : '';
  const subtitle = [
    s.strategy && `strategy ${s.strategy}`,
    s.base && `base ${s.base}`,
    s.backend && `backend ${s.backend}`,
  ]
    .filter(Boolean)
    .join(' · ');
  const body = `<h1>Run ${esc(run.name)}</h1>
<p class="note">${esc(subtitle || 'no config.json')} · ${esc(run.dir)}</p>
${cardsHtml(s)}
<h2>Curves</h2>
${chartsHtml(await curveImages(run, options.smoothing ?? 0))}
${confusionHtml(run)}
<h2>Misclassified test images</h2>
${await misclassifiedHtml(run, options.maxMisclassified ?? 200)}
${previewHtml}
<h2>Model</h2>
${await diagramHtml(run)}
${run.summary ? `<h3>Summary</h3><pre>${esc(run.summary)}</pre>` : ''}
<h2>Configuration</h2>
${configHtml(run)}
<details><summary>config.json</summary><pre>${esc(JSON.stringify(run.config, null, 2))}</pre></details>`;
  return htmlPage(`Run ${run.name}`, body);
}

/** Writes one self-contained HTML page for a run directory; returns its path. */
export async function writeRunReport(runDir: string, options: RunReportOptions = {}): Promise<string> {
  const run = await loadRun(runDir, basename(resolve(runDir)));
  return writeLoadedRunReport(run, options);
}

export async function writeLoadedRunReport(run: RunData, options: RunReportOptions = {}): Promise<string> {
  const out = options.out ?? join(run.dir, 'report.html');
  if (options.smoothing !== undefined && !(options.smoothing >= 0 && options.smoothing < 1)) {
    throw new UserError(`smoothing factor must be in [0, 1), got ${options.smoothing}`);
  }
  const html = await runReportHtml(run, options);
  assertOffline(html, out);
  await writeFileAtomic(out, html);
  return out;
}
