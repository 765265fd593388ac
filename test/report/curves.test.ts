// Curves from a real history: the history comes from actually training a small tfjs model (cpu backend) on
// features of real cat and dog images (test/report/real-run.ts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { UserError } from '@catdog/errors';
import { normalizeHistory, readHistory, renderCurves, smoothCurve, writeCurves } from '@catdog/report';
import { makeRealRun } from './real-run.js';

let dir: string;
let historyPath: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'report-curves-'));
  await makeRealRun(join(dir, 'run'), { strategy: 'scratch', epochs: 8 });
  historyPath = join(dir, 'run', 'history.json');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Mean standard deviation over the RGB channels: 0 for a blank image. */
async function variance(
  png: Buffer,
  region?: { left: number; top: number; width: number; height: number },
): Promise<number> {
  const img = region ? sharp(png).extract(region) : sharp(png);
  const stats = await sharp(await img.png().toBuffer()).stats();
  return stats.channels.slice(0, 3).reduce((a, c) => a + c.stdev, 0) / 3;
}

test('renderCurves draws accuracy and loss from a real history as PNGs of the requested size, not blank', async () => {
  const history = await readHistory(historyPath);
  assert.ok(
    history && history.epoch.length === 8 && history.val_acc?.length === 8,
    'the real history has 8 epochs with validation',
  );
  const curves = await renderCurves(history!, { width: 640, height: 400 });
  for (const [name, chart] of Object.entries(curves)) {
    const meta = await sharp(chart.png).metadata();
    assert.equal(meta.format, 'png', name);
    assert.equal(meta.width, 640, `${name} width`);
    assert.equal(meta.height, 400, `${name} height`);
    assert.ok((await variance(chart.png)) > 5, `${name} PNG is not blank`);
    // The title band holds rendered text (needs a font): not a flat colour.
    assert.ok(
      (await variance(chart.png, { left: 160, top: 0, width: 320, height: 26 })) > 5,
      `${name} title text is rendered`,
    );
    assert.match(chart.svg, /^<svg/);
  }
  assert.match(curves.accuracy.svg, /Training and validation accuracy/);
  assert.match(curves.accuracy.svg, /Training acc/);
  assert.match(curves.accuracy.svg, /Validation acc/);
  assert.match(curves.loss.svg, /Training and validation loss/);
  // One dot per training epoch (the book's 'bo'), a single line for validation ('b').
  const dots = curves.accuracy.svg.match(/<g class="mark-symbol role-mark layer_0_marks"[^>]*>(.*?)<\/g>/)?.[1] ?? '';
  assert.equal(dots.match(/<path/g)?.length, 8, 'one training dot per epoch');
  const lines = curves.accuracy.svg.match(/<g class="mark-line role-mark layer_1_marks"[^>]*>(.*?)<\/g>/)?.[1] ?? '';
  assert.equal(lines.match(/<path/g)?.length, 1, 'validation is one line');
  const scaled = await renderCurves(history!, { width: 500, height: 300, scale: 2 });
  const meta = await sharp(scaled.loss.png).metadata();
  assert.deepEqual([meta.width, meta.height], [1000, 600]);
});

test("smoothing follows the book's smooth_curve and changes the drawn curve", async () => {
  assert.deepEqual(
    smoothCurve([1, 0, 0], 0.8).map((v) => +v!.toFixed(6)),
    [1, 0.8, 0.64],
  );
  assert.deepEqual(smoothCurve([1, null, 0.5], 0.5), [1, null, 0.75]);
  assert.deepEqual(smoothCurve([0.3, 0.7], 0), [0.3, 0.7]);
  assert.throws(() => smoothCurve([1], 1), /smoothing factor/);
  const history = JSON.parse(await readFile(historyPath, 'utf8'));
  const raw = await renderCurves(history);
  const smooth = await renderCurves(history, { smoothing: 0.8 });
  assert.notEqual(raw.loss.svg, smooth.loss.svg);
  assert.match(smooth.loss.svg, /smoothed \(factor 0\.8\)/);
});

test('a phase change in the history (finetune: head, then unfrozen layers) is marked on the curves', async () => {
  const history = JSON.parse(await readFile(historyPath, 'utf8'));
  history.phase = history.epoch.map((e: number) => (e <= 4 ? 'head' : 'finetune'));
  const curves = await renderCurves(history);
  for (const chart of [curves.accuracy, curves.loss]) {
    assert.match(chart.svg, /class="mark-rule role-mark/);
    assert.match(chart.svg, />finetune<\/text>/);
  }
  const plain = await renderCurves({ ...history, phase: history.phase.map(() => 'train') });
  assert.doesNotMatch(plain.accuracy.svg, /mark-rule role-mark/);
});

test('writeCurves writes curves/accuracy and curves/loss as SVG and PNG', async () => {
  const history = await readHistory(historyPath);
  const out = join(dir, 'out');
  const files = await writeCurves(history!, out, { title: 'run' });
  assert.deepEqual(files.map((f) => f.slice(out.length + 1)).sort(), [
    'curves/accuracy.png',
    'curves/accuracy.svg',
    'curves/loss.png',
    'curves/loss.svg',
  ]);
  for (const f of files) assert.ok((await stat(f)).size > 1000, f);
  const png = await sharp(join(out, 'curves', 'accuracy.png')).metadata();
  assert.deepEqual([png.width, png.height], [640, 400]);
});

test('a history without validation draws training only; garbage is rejected with the cause', async () => {
  const history = JSON.parse(await readFile(historyPath, 'utf8'));
  const trainingOnly = { epoch: history.epoch, loss: history.loss, acc: history.acc };
  const curves = await renderCurves(trainingOnly);
  assert.match(curves.accuracy.svg, /Training acc/);
  assert.doesNotMatch(curves.accuracy.svg, /Validation acc/);
  // Keras 2.3+ names accuracy "accuracy"/"val_accuracy".
  const keras = normalizeHistory({ loss: [1, 0.5], accuracy: [0.5, 0.6], val_accuracy: [0.4, 0.7] });
  assert.deepEqual(keras.epoch, [1, 2]);
  assert.deepEqual(keras.val_acc, [0.4, 0.7]);

  assert.throws(
    () => normalizeHistory([1, 2]),
    (e: Error) => e instanceof UserError && /expected an object/.test(e.message),
  );
  assert.throws(() => normalizeHistory({ foo: [1] }), /no "loss", "acc", "val_loss" or "val_acc"/);
  assert.throws(() => normalizeHistory({ loss: [1, 'x'] }), /"loss"\[1\] is "x", not a number/);
  assert.throws(
    () => normalizeHistory({ epoch: [1, 2, 3], loss: [1, 2] }),
    /"loss" has 2 values but there are 3 epochs/,
  );
  await assert.rejects(renderCurves({ epoch: [], loss: [] }), /no epochs yet/);

  const bad = join(dir, 'bad-history.json');
  await writeFile(bad, '{"loss": [0.7, 0.6');
  await assert.rejects(
    readHistory(bad),
    (e: Error) => e instanceof UserError && e.message.includes(bad) && /invalid JSON/.test(e.message),
  );
});
