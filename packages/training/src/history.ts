// Training history in the run directory's format (history.json + history.csv).
import { join } from 'node:path';
import { writeFileAtomic } from './model-io.js';

export interface History {
  epoch: number[];
  loss: number[];
  acc: number[];
  val_loss: (number | null)[];
  val_acc: (number | null)[];
  seconds: number[];
  images_per_s: number[];
  /** Which phase of the strategy each epoch belongs to ('train', or 'head' / 'finetune' for finetune). */
  phase: string[];
}

export interface EpochLogs {
  loss: number;
  acc: number;
  val_loss: number | null;
  val_acc: number | null;
  seconds: number;
  images_per_s: number;
}

export function emptyHistory(): History {
  return { epoch: [], loss: [], acc: [], val_loss: [], val_acc: [], seconds: [], images_per_s: [], phase: [] };
}

export function appendEpoch(h: History, epoch: number, logs: EpochLogs, phase: string): void {
  h.epoch.push(epoch);
  h.loss.push(logs.loss);
  h.acc.push(logs.acc);
  h.val_loss.push(logs.val_loss);
  h.val_acc.push(logs.val_acc);
  h.seconds.push(logs.seconds);
  h.images_per_s.push(logs.images_per_s);
  h.phase.push(phase);
}

export function historyCsv(h: History): string {
  const cols = ['epoch', 'phase', 'loss', 'acc', 'val_loss', 'val_acc', 'seconds', 'images_per_s'] as const;
  const rows = h.epoch.map((_, i) => cols.map((c) => {
    const v = (h[c] as unknown[])[i];
    return v === null || v === undefined ? '' : String(v);
  }).join(','));
  return `${cols.join(',')}\n${rows.join('\n')}${rows.length ? '\n' : ''}`;
}

export async function writeHistory(runDir: string, h: History): Promise<void> {
  await writeFileAtomic(join(runDir, 'history.json'), JSON.stringify(h, null, 2));
  await writeFileAtomic(join(runDir, 'history.csv'), historyCsv(h));
}
