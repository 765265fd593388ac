// One user cache root for everything catdog caches (kernel plans, downloaded weights, features of remote runs):
// CATDOG_CACHE_DIR, else $XDG_CACHE_HOME/catdog, else ~/.cache/catdog; each kind in its own folder under it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { planCacheDir } from '@catdog/backend';
import { defaultCacheDir } from '@catdog/models';
import { userCacheDir } from '@catdog/storage';
import { defaultFeatureCacheDir } from '@catdog/training';

function withEnv(env: Record<string, string | undefined>, run: () => void): void {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  const set = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  set(env);
  try {
    run();
  } finally {
    set(saved);
  }
}

test('the cache root: CATDOG_CACHE_DIR, else $XDG_CACHE_HOME/catdog, else ~/.cache/catdog', () => {
  withEnv({ CATDOG_CACHE_DIR: '/c/root', XDG_CACHE_HOME: '/xdg' }, () => {
    assert.equal(userCacheDir(), '/c/root');
    assert.equal(userCacheDir('features'), '/c/root/features');
    assert.equal(planCacheDir(), userCacheDir(), 'the kernel plans live at the same root');
  });
  withEnv({ CATDOG_CACHE_DIR: undefined, XDG_CACHE_HOME: '/xdg' }, () => {
    assert.equal(userCacheDir('models'), '/xdg/catdog/models');
    assert.equal(planCacheDir(), '/xdg/catdog');
  });
  withEnv({ CATDOG_CACHE_DIR: undefined, XDG_CACHE_HOME: undefined }, () => {
    assert.equal(userCacheDir(), join(homedir(), '.cache', 'catdog'));
  });
});

test('downloads and the features of remote runs go to their folders under the root; local runs keep theirs beside the run', () => {
  withEnv({ CATDOG_CACHE_DIR: '/c/root' }, () => {
    assert.equal(defaultCacheDir(), '/c/root/models');
    assert.equal(defaultFeatureCacheDir('s3://bucket/runs/finetune'), '/c/root/features');
    assert.equal(defaultFeatureCacheDir('runs/finetune'), resolve('runs', '.feature-cache'));
  });
});
