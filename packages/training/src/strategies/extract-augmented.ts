// The book's 5.3.1 "feature extraction with data augmentation": the base frozen inside the model, trained end
// to end on augmented batches. The frozen base runs compiled (BatchNorm folded) below the trained head.
import { imagePhase, predictTestImages } from '../phases.js';
import type { StrategyDefinition } from '../strategy.js';
import { buildTransferModel, FEATURE_EXTRACTION_DEFAULTS } from '../transfer.js';

export const extractAugmented: StrategyDefinition = {
  help: 'base frozen inside the model, trained end to end on augmented batches (RMSprop 2e-5, 30 epochs)',
  defaults: { ...FEATURE_EXTRACTION_DEFAULTS, augment: true },
  presets: {
    'cpu-quick': {
      inputSize: 128,
      epochs: 3,
      stepsPerEpoch: null,
      validationSteps: null,
      headPooling: 'avg',
      learningRate: 1e-3,
      batchSize: 32,
    },
    'ci-smoke': { inputSize: 96, epochs: 2, learningRate: 1e-3, headPooling: 'avg' },
  },
  async build(ctx) {
    const { model, extractor, head } = await buildTransferModel(ctx);
    // Only the head trains: it runs above the frozen base's compiled forward pass.
    const phase = imagePhase(ctx, {
      name: 'train',
      epochs: ctx.cfg.epochs,
      learningRate: ctx.cfg.learningRate,
      model,
      frozen: { bottom: extractor, top: head.model },
    });
    return { model, phases: [phase], predictTest: () => predictTestImages(ctx, model) };
  },
};
