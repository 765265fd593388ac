// The book's 5.2.4: the small convnet trained from scratch on the 2,000 training images, no augmentation.
import { buildConvnet } from '@catdog/models';
import { imagePhase, predictTestImages } from '../phases.js';
import type { StrategyDefinition } from '../strategy.js';

export const scratch: StrategyDefinition = {
  help: "the book's convnet from scratch, no augmentation (RMSprop 1e-4, batch 20, 30 epochs × 100 steps, input 150)",
  defaults: {
    inputSize: 150,
    batchSize: 20,
    epochs: 30,
    stepsPerEpoch: 100,
    validationSteps: 50,
    learningRate: 1e-4,
    dropout: 0,
    augment: false,
  },
  presets: {
    'cpu-quick': { inputSize: 96, epochs: 12, stepsPerEpoch: null, validationSteps: null, learningRate: 5e-4 },
    // Enough steps for the convnet to (over)fit 40 tiny images: the smoke test asserts that it learns.
    'ci-smoke': { learningRate: 1e-3, batchSize: 8, epochs: 24 },
  },
  async build(ctx) {
    const { cfg } = ctx;
    const model = buildConvnet({
      inputShape: [cfg.inputSize, cfg.inputSize, 3],
      dropout: cfg.dropout,
      seed: cfg.seed,
      classes: ctx.classes.length,
    });
    return {
      model,
      phases: [imagePhase(ctx, { name: 'train', epochs: cfg.epochs, learningRate: cfg.learningRate, model })],
      predictTest: () => predictTestImages(ctx, model),
    };
  },
};
