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

/**
 * The CLIs as `npx nx run …` and the image run them: compiled to dist/node by tools/build.mjs (`npm test` builds them
 * first), run as `node <file> …`.
 */
export const CLI = {
  prep: join(projectRoot, 'dist', 'node', 'apps', 'prep', 'src', 'main.js'),
  augment: join(projectRoot, 'dist', 'node', 'apps', 'augment', 'src', 'main.js'),
  trainer: join(projectRoot, 'dist', 'node', 'apps', 'trainer', 'src', 'main.js'),
  /** trainer's report CLI (nx run trainer:report) */
  report: join(projectRoot, 'dist', 'node', 'apps', 'trainer', 'src', 'report.js'),
} as const;

if (!existsSync(CLI.trainer)) {
  throw new Error(`${CLI.trainer} not found: build the CLIs with \`node tools/build.mjs\` (npm test does it first)`);
}
