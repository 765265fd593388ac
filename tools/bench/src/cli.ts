// The CLIs as `nx run` runs them, compiled to dist/node by tools/build.mjs: importing this module runs the build
// (a no-op when dist/node is up to date), so a benchmark times what users run, start-up included.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const built = spawnSync(process.execPath, [join(root, 'tools', 'build.mjs')], { cwd: root, stdio: 'inherit' });
if (built.status !== 0) throw new Error(`node tools/build.mjs failed (exit ${built.status})`);

const compiled = (app: string, file = 'main') => join(root, 'dist', 'node', 'apps', app, 'src', `${file}.js`);
export const CLI = {
  prep: compiled('prep'),
  augment: compiled('augment'),
  trainer: compiled('trainer'),
  report: compiled('trainer', 'report'),
} as const;
