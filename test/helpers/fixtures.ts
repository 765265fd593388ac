// Paths to the read-only shared material beside the project root (never committed).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const projectRoot = fileURLToPath(new URL('../..', import.meta.url));
export const sharedRoot = join(projectRoot, '..', 'shared');
/** Kaggle's flat training folder: cat.0.jpg … dog.2999.jpg */
export const kaggleTrainDir = join(sharedRoot, 'datasets', 'dogs-vs-cats', 'train');
export const mobilenetV2Dir = (alpha: '1.0' | '0.35') => join(sharedRoot, 'weights', `mobilenet_v2_${alpha}_224`);
export const kerasH5Dir = join(sharedRoot, 'fixtures', 'keras-h5');

if (!existsSync(kaggleTrainDir)) {
  throw new Error(`shared dataset not found at ${kaggleTrainDir}: tests need ../shared beside the project root`);
}
