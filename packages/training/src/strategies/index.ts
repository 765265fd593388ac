// The strategies by name: the trainer's subcommands, in the order the book introduces them. A new strategy is
// one module in this folder and one line here.
import type { StrategyDefinition } from '../strategy.js';
import { augmented } from './augmented.js';
import { extractAugmented } from './extract-augmented.js';
import { extract } from './extract.js';
import { finetune } from './finetune.js';
import { scratch } from './scratch.js';

export const STRATEGIES = {
  scratch,
  augmented,
  extract,
  'extract-augmented': extractAugmented,
  finetune,
} satisfies Record<string, StrategyDefinition>;

export type Strategy = keyof typeof STRATEGIES;
export const STRATEGY_NAMES = Object.keys(STRATEGIES) as Strategy[];

export function isStrategy(name: string): name is Strategy {
  return Object.hasOwn(STRATEGIES, name);
}
