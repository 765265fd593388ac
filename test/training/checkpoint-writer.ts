// Writes checkpoints of a small weight set in a loop until killed (used by checkpoint.test.ts).
import * as tf from '@tensorflow/tfjs';
import { RunDir, emptyHistory, initialState } from '@catdog/training';
await tf.setBackend('cpu');
const run = RunDir.open(process.argv[2]);
const weights = { 'dense/kernel': tf.randomNormal([256, 256]), 'dense/bias': tf.zeros([256]) };
for (let epoch = 1; ; epoch++) {
  const state = { ...initialState(emptyHistory()), phase: 'train', phaseEpoch: epoch, epoch, globalStep: epoch * 10 };
  await run.writeCheckpoint('last', epoch, {
    weights,
    optimizer: [{ name: '00000|ms', tensor: weights['dense/bias'] }],
    state,
  });
  if (epoch === 1) process.stdout.write('first\n');
}
