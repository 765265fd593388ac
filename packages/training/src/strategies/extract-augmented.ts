// The book's 5.3.1 "feature extraction with data augmentation": the base frozen inside the model, trained end
// to end on augmented batches. The frozen base runs compiled (BatchNorm folded) below the trained head.
import { imagePhase, predictTestImages } from '../phases.js';
import type { StrategyDefinition } from '../strategy.js';
import { buildTransferModel, resolveWeights } from '../transfer.js';

export const extractAugmented: StrategyDefinition = {
  help: 'base frozen inside the model, trained end to end on augmented batches (RMSprop 2e-5, 30 epochs)',
  usesBase: true,
  defaults: { base: 'mobilenet_v2', inputSize: 150, batchSize: 20, epochs: 30, stepsPerEpoch: 100, validationSteps: 50, learningRate: 2e-5, dropout: 0.5, augment: true },
  presets: {
    'cpu-quick': { inputSize: 128, epochs: 3, stepsPerEpoch: null, validationSteps: null, headPooling: 'avg', learningRate: 1e-3, batchSize: 32 },
    'ci-smoke': { inputSize: 96, epochs: 2, learningRate: 1e-3, headPooling: 'avg' },
  },
  async build(ctx) {
    const { cfg } = ctx;
    const t = await buildTransferModel(ctx, resolveWeights(cfg));
    t.freezeBase();
    return {
      model: t.model,
      phases: [imagePhase(ctx, { name: 'train', epochs: cfg.epochs, learningRate: cfg.learningRate, model: t.model, frozen: { bottom: t.extractor, top: t.head.model } })],
      predictTest: () => predictTestImages(ctx, t.model),
    };
  },
};
