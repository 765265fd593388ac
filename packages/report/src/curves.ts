// Training vs validation curves as in the book's figures (training as dots 'bo', validation as a line 'b'),
// described in vega-lite, rendered to SVG by vega in Node and rasterised with sharp.
import { join } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import sharp from 'sharp';
import { UserError } from '@catdog/errors';
import { normalizeHistory, writeFileAtomic, type AnyHistory, type NormalizedHistory } from './run-dir.js';

export interface CurveOptions {
  /** Exponential smoothing factor of the book's `smooth_curve` (0 = off, the book uses 0.8). */
  smoothing?: number;
  /** Size of the whole picture in CSS pixels (the PNG is width×scale by height×scale). Default 640×400. */
  width?: number;
  height?: number;
  /** Shown under each chart's title, e.g. the run's name. */
  title?: string;
  /** PNG pixels per CSS pixel (default 1). */
  scale?: number;
}

export interface RenderedChart {
  svg: string;
  png: Buffer;
}

export interface Curves {
  accuracy: RenderedChart;
  loss: RenderedChart;
}

const BLUE = '#1f77b4';

/** The book's `smooth_curve`: each point becomes previous * factor + point * (1 - factor). Nulls are kept as gaps. */
export function smoothCurve(points: readonly (number | null)[], factor = 0.8): (number | null)[] {
  if (!(factor >= 0 && factor < 1)) throw new UserError(`smoothing factor must be in [0, 1), got ${factor}`);
  const out: (number | null)[] = [];
  let previous: number | null = null;
  for (const point of points) {
    if (point === null) {
      out.push(null);
      continue;
    }
    previous = previous === null ? point : previous * factor + point * (1 - factor);
    out.push(previous);
  }
  return out;
}

interface Row {
  epoch: number;
  value: number;
  series: string;
}

/** The vega-lite spec of one chart: training as points, validation as a line, one colour as in the book. */
export function curveSpec(
  history: NormalizedHistory,
  metric: 'acc' | 'loss',
  options: CurveOptions = {},
): TopLevelSpec {
  const smoothing = options.smoothing ?? 0;
  const width = options.width ?? 640;
  const height = options.height ?? 400;
  const label = metric === 'acc' ? 'acc' : 'loss';
  const training = `Training ${label}`;
  const validation = `Validation ${label}`;
  const smooth = (s: (number | null)[] | null) => (s && smoothing > 0 ? smoothCurve(s, smoothing) : s);
  const rows: Row[] = [];
  const add = (s: (number | null)[] | null, name: string) =>
    s?.forEach((value, i) => {
      if (value !== null) rows.push({ epoch: history.epoch[i]!, value, series: name });
    });
  add(smooth(history[metric]), training);
  add(smooth(history[`val_${metric}`]), validation);
  const present = [training, validation].filter((s) => rows.some((r) => r.series === s));
  const subtitle = [options.title, smoothing > 0 ? `smoothed (factor ${smoothing})` : undefined]
    .filter(Boolean)
    .join(' · ');
  const epochs = history.epoch;
  const x = {
    field: 'epoch',
    type: 'quantitative' as const,
    title: 'Epochs',
    // Pixel padding keeps the first and last dots whole instead of cut in half by the plot's edge.
    scale: {
      zero: false,
      nice: false,
      padding: 8,
      domain: [Math.min(...epochs), Math.max(...epochs, Math.min(...epochs) + 1)],
    },
    axis: { tickMinStep: 1, format: 'd' },
  };
  const y = {
    field: 'value',
    type: 'quantitative' as const,
    title: metric === 'acc' ? 'Accuracy' : 'Loss',
    scale: { zero: false, padding: 8 },
  };
  const color = {
    field: 'series',
    type: 'nominal' as const,
    title: null,
    scale: { domain: present, range: present.map(() => BLUE) },
    legend: {
      // Accuracy rises and loss falls, so the legend sits where the curves usually are not.
      orient: metric === 'acc' ? ('bottom-right' as const) : ('top-right' as const),
      fillColor: 'white',
      strokeColor: '#cccccc',
      padding: 6,
      symbolStrokeWidth: 2,
      symbolSize: 60,
      encode: {
        symbols: {
          update: {
            shape: { signal: `datum.value === '${validation}' ? 'stroke' : 'circle'` },
            fill: { signal: `datum.value === '${validation}' ? 'transparent' : '${BLUE}'` },
            stroke: { value: BLUE },
          },
        },
      },
    },
  };
  // Where a strategy changes phase (finetune: head first, then unfrozen top layers), a dashed rule marks it.
  const phaseStarts: { epoch: number; phase: string }[] = [];
  history.phase?.forEach((p, i) => {
    if (i > 0 && p !== history.phase![i - 1]) phaseStarts.push({ epoch: history.epoch[i]! - 0.5, phase: p });
  });
  const phaseLayers = phaseStarts.length
    ? [
        {
          data: { values: phaseStarts },
          mark: { type: 'rule', strokeDash: [4, 4], color: '#888888' },
          encoding: { x: { field: 'epoch', type: 'quantitative' } },
        },
        {
          data: { values: phaseStarts },
          mark: { type: 'text', align: 'left', baseline: 'top', dx: 4, dy: 4, color: '#555555', fontSize: 11 },
          encoding: { x: { field: 'epoch', type: 'quantitative' }, y: { value: 0 }, text: { field: 'phase' } },
        },
      ]
    : [];
  return {
    $schema: 'vega-lite/v6.json',
    width,
    height,
    autosize: { type: 'fit', contains: 'padding' },
    background: 'white',
    padding: 8,
    title: {
      text: metric === 'acc' ? 'Training and validation accuracy' : 'Training and validation loss',
      ...(subtitle ? { subtitle } : {}),
    },
    data: { values: rows },
    layer: [
      {
        transform: [{ filter: { field: 'series', equal: training } }],
        mark: { type: 'point', filled: true, size: 40, opacity: 1 },
        encoding: { x, y, color },
      },
      {
        transform: [{ filter: { field: 'series', equal: validation } }],
        mark: { type: 'line', strokeWidth: 2 },
        encoding: { x, y, color },
      },
      ...phaseLayers,
    ],
    config: { font: 'sans-serif', view: { stroke: '#dddddd' } },
  } as unknown as TopLevelSpec;
}

/** Renders a vega-lite spec to SVG with vega's headless renderer (no DOM, no canvas). */
export async function renderVegaLiteSvg(spec: TopLevelSpec): Promise<string> {
  // Loaded on first use: vega and vega-lite take ~1 s to import, which every trainer command paid before.
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders a vega-lite spec to SVG (vega, no DOM) and PNG (sharp's librsvg; text needs any installed sans-serif font). */
export async function renderVegaLite(spec: TopLevelSpec, scale = 1): Promise<RenderedChart> {
  const svg = await renderVegaLiteSvg(spec);
  const png = await sharp(Buffer.from(svg), { density: 72 * scale })
    .png()
    .toBuffer();
  return { svg, png };
}

function hasData(history: NormalizedHistory, metric: 'acc' | 'loss'): boolean {
  return [history[metric], history[`val_${metric}`]].some((s) => s?.some((v) => v !== null));
}

/**
 * Training and validation accuracy and loss charts of a history (as in `history.json`), SVG and PNG.
 * A history without validation series draws training only; one without any values is an error.
 */
export async function renderCurves(
  history: AnyHistory | NormalizedHistory,
  options: CurveOptions = {},
): Promise<Curves> {
  const h = normalizeHistory(history);
  if (h.epoch.length === 0) throw new UserError('history has no epochs yet: nothing to plot');
  const scale = options.scale ?? 1;
  if (!(scale > 0)) throw new UserError(`scale must be positive, got ${scale}`);
  for (const metric of ['acc', 'loss'] as const) {
    if (!hasData(h, metric))
      throw new UserError(
        `history has no ${metric === 'acc' ? 'accuracy ("acc"/"val_acc")' : 'loss ("loss"/"val_loss")'} values to plot`,
      );
  }
  const [accuracy, loss] = await Promise.all([
    renderVegaLite(curveSpec(h, 'acc', options), scale),
    renderVegaLite(curveSpec(h, 'loss', options), scale),
  ]);
  return { accuracy, loss };
}

/**
 * Writes `<outDir>/curves/accuracy.{svg,png}` and `<outDir>/curves/loss.{svg,png}` (pass the run directory as
 * `outDir`, as in the run directory layout); returns the four paths.
 */
export async function writeCurves(
  history: AnyHistory | NormalizedHistory,
  outDir: string,
  options: CurveOptions = {},
): Promise<string[]> {
  const curves = await renderCurves(history, options);
  const written: string[] = [];
  for (const [name, chart] of Object.entries(curves)) {
    for (const [ext, data] of [
      ['svg', chart.svg],
      ['png', chart.png],
    ] as const) {
      const path = join(outDir, 'curves', `${name}.${ext}`);
      await writeFileAtomic(path, data);
      written.push(path);
    }
  }
  return written;
}
