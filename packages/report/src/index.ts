// @catdog/report: training curves (vega-lite), model diagrams (Graphviz) and self-contained HTML reports.
export {
  type History,
  type AnyHistory,
  type NormalizedHistory,
  type RunMetrics,
  type RunConfig,
  type RunData,
  type MisclassifiedImage,
  normalizeHistory,
  readHistory,
  readJsonFile,
  loadRun,
  findRunDirs,
  isRunDir,
} from './run-dir.js';
export {
  type CurveOptions,
  type Curves,
  type RenderedChart,
  smoothCurve,
  curveSpec,
  renderVegaLite,
  renderVegaLiteSvg,
  renderCurves,
  writeCurves,
} from './curves.js';
export {
  type Shape,
  type ShapeMap,
  type ModelTopology,
  type ModelDiagramOptions,
  type ModelDiagram,
  type ModelViewsOptions,
  normalizeTopology,
  inferOutputShapes,
  formatShape,
  modelDot,
  modelDiagram,
  writeModelViews,
} from './model-diagram.js';
export { type RunSummary, type RunReportOptions, summarizeRun, runLabel, writeRunReport } from './run-report.js';
export {
  type ComparisonOptions,
  type ComparisonResult,
  BOOK_ACCURACY,
  rankRuns,
  verdict,
  writeComparisonReport,
} from './comparison.js';
export { type ReportCommandOptions, type ReportCommandResult, runReportCommand } from './command.js';
