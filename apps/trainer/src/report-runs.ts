// The report of a local or s3:// folder of runs (or one run): what `trainer:report --runs|--run` and `trainer all`
// write. @catdog/report (vega, sharp, Graphviz, tfjs) loads only when a report is written.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { isS3Url, openStorage } from '@catdog/storage';

export interface ReportRunsOptions {
  /** A folder of runs (local or s3://): the comparison page. */
  runs?: string;
  /** One run (local or s3://): its page. */
  run?: string;
  /** HTML file to write (local or, for runs on S3, s3:// or local; default beside the runs). */
  out?: string;
  smoothing?: number;
  /** Relative local paths resolve against this. */
  cwd: string;
}

export interface ReportRunsResult {
  /** Where the page was written (a local path or s3:// URL). */
  out: string;
  runs: number;
  warnings: string[];
}

export async function reportRuns(opts: ReportRunsOptions): Promise<ReportRunsResult> {
  const { runReportCommand } = await import('@catdog/report');
  const remote = opts.runs ?? opts.run!;
  if (!isS3Url(remote)) {
    const result = await runReportCommand({ ...opts });
    return { out: result.out, runs: result.runs.length, warnings: result.warnings };
  }
  // Runs on S3: the report reads a local copy of what it reads (JSON, summaries, model.json, thumbnails; not
  // checkpoints or weights), and the pages it writes go back beside the runs (or to a local --out).
  const local = await mkdtemp(join(tmpdir(), 'catdog-report-'));
  try {
    const storage = openStorage(remote);
    const copied = new Set<string>();
    for await (const e of storage.list()) {
      if (/(^|\/)checkpoints\//.test(e.path) || e.path.endsWith('.bin')) continue;
      await mkdir(dirname(join(local, e.path)), { recursive: true });
      await writeFile(join(local, e.path), await storage.read(e.path));
      copied.add(e.path);
    }
    const out = opts.out && !isS3Url(opts.out) ? resolve(opts.cwd, opts.out) : undefined;
    const result = await runReportCommand({
      runs: opts.runs ? local : undefined,
      run: opts.run ? local : undefined,
      out,
      smoothing: opts.smoothing,
      cwd: local,
    });
    const warnings = result.warnings.map((w) => w.split(local).join(remote.replace(/\/$/, '')));
    if (out) return { out, runs: result.runs.length, warnings };
    for (const path of await filesUnder(local)) {
      if (!copied.has(path)) await storage.write(path, await readFile(join(local, path)));
    }
    return {
      out: storage.urlOf(relative(local, result.out).split('\\').join('/')),
      runs: result.runs.length,
      warnings,
    };
  } finally {
    await rm(local, { recursive: true, force: true });
  }
}

async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(root, join(e.parentPath, e.name)).split('\\').join('/'));
}
