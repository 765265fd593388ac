// Progress display: a cli-progress bar on a TTY, plain periodic lines otherwise (logs, CI).
import cliProgress from 'cli-progress';

export interface ProgressSink {
  start(label: string, total: number): void;
  update(step: number, values: { loss: number; acc: number; imagesPerSecond: number }): void;
  stop(): void;
  /** A line of text outside the bar. */
  log(line: string): void;
}

function fmtEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
    : s >= 60
      ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
      : `${s}s`;
}

const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(4) : '-');

export function createProgress(
  opts: { tty?: boolean; write?: (line: string) => void; intervalMs?: number } = {},
): ProgressSink {
  const write = opts.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const tty = opts.tty ?? Boolean(process.stderr.isTTY);
  if (tty) {
    let bar: cliProgress.SingleBar | null = null;
    return {
      start(label, total) {
        bar = new cliProgress.SingleBar(
          {
            format: `${label} [{bar}] {value}/{total} loss {loss} acc {acc} {ips} img/s ETA {eta_formatted}`,
            hideCursor: true,
            stream: process.stderr,
            etaBuffer: 20,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0, { loss: '-', acc: '-', ips: '-' });
      },
      update(step, v) {
        bar?.update(step, { loss: fmt(v.loss), acc: fmt(v.acc), ips: v.imagesPerSecond.toFixed(1) });
      },
      stop() {
        bar?.stop();
        bar = null;
      },
      log(line) {
        write(line);
      },
    };
  }
  const interval = opts.intervalMs ?? 10_000;
  let label = '';
  let total = 0;
  let started = 0;
  let last = 0;
  return {
    start(l, t) {
      label = l;
      total = t;
      started = Date.now();
      last = started;
    },
    update(step, v) {
      const now = Date.now();
      if (now - last < interval || step >= total) return;
      last = now;
      const eta = ((now - started) / 1000 / step) * (total - step);
      const metrics = Number.isFinite(v.loss) ? ` loss ${fmt(v.loss)} acc ${fmt(v.acc)}` : '';
      write(`${label} ${step}/${total}${metrics} ${v.imagesPerSecond.toFixed(1)} img/s ETA ${fmtEta(eta)}`);
    },
    stop() {},
    log(line) {
      write(line);
    },
  };
}
