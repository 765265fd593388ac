// The book's 5.3.1 "feature extraction with data augmentation": the base frozen inside the model, trained end
// to end on augmented batches. The frozen base runs compiled (BatchNorm folded) below the trained head.
import { predictTestImages } from '../phases.js';
import type { PhaseSpec, StrategyDefinition } from '../strategy.js';
import { buildTransferModel, FEATURE_EXTRACTION_DEFAULTS, headPhase } from '../transfer.js';

export const extractAugmented: StrategyDefinition = {
  help: 'base frozen inside the model, trained end to end on augmented batches (RMSprop 2e-5, 30 epochs)',
  defaults: { ...FEATURE_EXTRACTION_DEFAULTS, augment: true },
  presets: {
    // Too few augmented epochs fit on a CPU for a head to learn from scratch on them: the head first learns on
    // cached features with the book's settings (150 px), then 3 of the book's augmented epochs lower its validation
    // loss; the best validation epoch is kept. (At 96 px, extract's cpu-quick size, augmented epochs cost the
    // frozen features accuracy: 90.1% against 92.0%, BENCHMARKS.md.)
    'cpu-quick': { headTraining: 'features', epochs: 3, keepBest: true },
    'ci-smoke': { inputSize: 96, epochs: 2, learningRate: 1e-3, headPooling: 'avg' },
  },
  async build(ctx) {
    const { cfg } = ctx;
    const t = await buildTransferModel(ctx);
    const phases: PhaseSpec[] = [];
    // headTraining 'features' (cpu-quick): a head phase on cached features first; the book trains the head on images only.
    if (cfg.headTraining === 'features' && cfg.headEpochs > 0) {
      phases.push(
        headPhase(ctx, t, {
          name: 'head',
          epochs: cfg.headEpochs,
          learningRate: cfg.headLearningRate,
          features: (split) => t.cache.get(split),
        }),
      );
    }
    // Only the head trains: it runs above the frozen base's compiled forward pass. After a head phase on cached
    // features, the validation split's features are cached already.
    phases.push(
      headPhase(ctx, t, {
        name: 'train',
        epochs: cfg.epochs,
        learningRate: cfg.learningRate,
        validateOnCache: phases.length > 0,
      }),
    );
    return {
      model: t.model,
      phases,
      predictTest: () => predictTestImages(ctx, t.model),
      release: () => t.cache.release(),
    };
  },
};
