// The split plan: which source files go to which split and shard, in which order. Pure and deterministic,
// so every worker computes the same plan from the same listing and writes its own shards of it.
import { createHash } from 'node:crypto';
import { UserError } from '@catdog/errors';
import { FORMAT_VERSION, SPLITS, type ResizeSpec, type SplitName } from './manifest.js';
import type { Source, SourceItem } from './sources.js';

export interface SplitSpec {
  /** Per class: a count (≥ 1) or a fraction (< 1) of the class's images. Book: 1000 / 500 / 500. */
  train?: number;
  validation?: number;
  test?: number;
  /** Shuffle each class before taking the splits, and each split's order (seeded; reproducible). Default false: numeric order. */
  shuffle?: boolean;
  seed?: number;
  /** Classes that must be present (default: every class found; at least two). */
  classes?: string[];
}

export interface PlanOptions extends SplitSpec {
  /** Samples per shard. Default 500 (≈11 MB of Kaggle JPEGs). */
  samplesPerShard?: number;
  /** Alternative: target shard size in bytes, estimated from source file sizes. */
  shardBytes?: number;
  resize?: ResizeSpec;
  /** JPEG quality when re-encoding. Default 90. */
  quality?: number;
  /** Also write the book's plain folder layout (<split>/<class>/<file>.jpg). */
  folders?: boolean;
}

export interface PlannedShard {
  /** Index over all shards of all splits; worker w of n writes shards with globalIndex % n === w. */
  globalIndex: number;
  split: SplitName;
  path: string;
  items: SourceItem[];
  /** Per class, spare images (beyond the split counts) that replace broken ones in this shard, in order. */
  reserve: Map<string, SourceItem[]>;
}

export interface Plan {
  id: string;
  classes: string[];
  requested: Record<SplitName, number>;
  perClass: Record<SplitName, number>;
  order: 'interleaved' | 'shuffled';
  seed?: number;
  samplesPerShard: number;
  resize?: ResizeSpec;
  quality: number;
  folders: boolean;
  shards: PlannedShard[];
}

export const BOOK_SPLIT: Record<SplitName, number> = { train: 1000, validation: 500, test: 500 };
export const DEFAULT_SAMPLES_PER_SHARD = 500;
export const DEFAULT_QUALITY = 90;

/** Small seeded PRNG (mulberry32): the same seed gives the same order on every machine. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffled<T>(items: T[], random: () => number): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function resolveCount(value: number, available: number, what: string): number {
  if (!Number.isFinite(value) || value < 0) throw new UserError(`${what}: ${value} is not a count or a fraction`);
  if (value > 0 && value < 1) return Math.floor(value * available);
  if (!Number.isInteger(value))
    throw new UserError(`${what}: ${value} is neither a whole count nor a fraction below 1`);
  return value;
}

export function shardPath(split: SplitName, index: number): string {
  return `${split}/${split}-${String(index).padStart(6, '0')}.tar`;
}

/** Throws a UserError for requested classes the source lacks, or fewer than two classes. */
function checkClasses(source: Source, wanted: string[] | undefined): void {
  const classes = source.classes;
  if (wanted?.length) {
    const missing = wanted.filter((c) => !source.byClass.has(c));
    if (missing.length)
      throw new UserError(
        `${source.url}: missing class${missing.length > 1 ? 'es' : ''} ${missing.join(', ')} (found: ${classes.join(', ') || 'none'})`,
        { code: 'bad-source' },
      );
  }
  if (classes.length < 2) {
    const hint =
      source.layout !== 'class-folders' ? ' (expected cat.N and dog.N files)' : ' (expected one folder per class)';
    throw new UserError(
      `${source.url}: found ${classes.length === 0 ? 'no class' : `only class ${classes[0]}`}; need at least two${hint}`,
      { code: 'bad-source' },
    );
  }
}

interface ClassSplit {
  /** per split, per class: the images it gets */
  members: Map<SplitName, Map<string, SourceItem[]>>;
  /** per class: the images no split took (spares for broken ones) */
  reserves: Map<string, SourceItem[]>;
  perClass: Record<SplitName, number>;
}

/** Deals each class's images to the splits in order (after a seeded shuffle if asked); throws if any class is short. */
function splitClasses(
  source: Source,
  requested: Record<SplitName, number>,
  random: (() => number) | undefined,
): ClassSplit {
  const classes = source.classes;
  const perClass = { train: 0, validation: 0, test: 0 } as Record<SplitName, number>;
  const members = new Map<SplitName, Map<string, SourceItem[]>>(SPLITS.map((s) => [s, new Map()]));
  const reserves = new Map<string, SourceItem[]>();
  const shortages: string[] = [];
  for (const cls of classes) {
    let items = source.byClass.get(cls)!;
    if (random) items = shuffled(items, random);
    let offset = 0;
    const counts = SPLITS.map((s) => resolveCount(requested[s], items.length, `--${s}`));
    const need = counts.reduce((a, b) => a + b, 0);
    if (items.length < need) {
      shortages.push(
        `class ${cls} has ${items.length} images, the split needs ${need} (${SPLITS.map((s, i) => `${counts[i]} ${s}`).join(' + ')})`,
      );
      continue;
    }
    SPLITS.forEach((s, i) => {
      // Fractions can resolve differently per class; the manifest records the per-class counts of the first class
      // and the exact per-class counts per split.
      if (classes[0] === cls) perClass[s] = counts[i];
      members.get(s)!.set(cls, items.slice(offset, offset + counts[i]));
      offset += counts[i];
    });
    reserves.set(cls, items.slice(offset));
  }
  if (shortages.length)
    throw new UserError(`${source.url}: too few images: ${shortages.join('; ')}`, { code: 'bad-source' });
  return { members, reserves, perClass };
}

/**
 * Cuts each split into shards. Order within a split: classes interleaved (cat.0, dog.0, cat.1, …) so every shard
 * is balanced, or a seeded shuffle; a shard closes at `shardBytes` (estimated) or `samplesPerShard` samples.
 */
function cutShards(
  classes: string[],
  members: ClassSplit['members'],
  random: (() => number) | undefined,
  shardBytes: number | undefined,
  samplesPerShard: number,
): PlannedShard[] {
  const shards: PlannedShard[] = [];
  for (const split of SPLITS) {
    const lists = classes.map((c) => members.get(split)!.get(c)!);
    let ordered: SourceItem[] = [];
    const longest = Math.max(...lists.map((l) => l.length));
    for (let i = 0; i < longest; i++) for (const l of lists) if (i < l.length) ordered.push(l[i]);
    if (random) ordered = shuffled(ordered, random);
    let chunk: SourceItem[] = [];
    let bytes = 0;
    let index = 0;
    const flush = () => {
      if (chunk.length === 0) return;
      shards.push({
        globalIndex: shards.length,
        split,
        path: shardPath(split, index++),
        items: chunk,
        reserve: new Map(),
      });
      chunk = [];
      bytes = 0;
    };
    for (const item of ordered) {
      chunk.push(item);
      bytes += item.size + 1536;
      if (shardBytes ? bytes >= shardBytes : chunk.length >= samplesPerShard) flush();
    }
    flush();
  }
  return shards;
}

/**
 * Spare images of each class are dealt round-robin to the shards holding that class, so a worker can replace a
 * broken image without knowing what other workers found.
 */
function dealReserves(classes: string[], shards: PlannedShard[], reserves: ClassSplit['reserves']): void {
  for (const cls of classes) {
    const holders = shards.filter((s) => s.items.some((i) => i.className === cls));
    (reserves.get(cls) ?? []).forEach((item, j) => {
      if (holders.length === 0) return;
      const shard = holders[j % holders.length];
      const list = shard.reserve.get(cls) ?? [];
      list.push(item);
      shard.reserve.set(cls, list);
    });
  }
}

/** Builds the plan; throws a UserError (before anything is written) for missing classes or too few images. */
export function buildPlan(source: Source, options: PlanOptions = {}): Plan {
  const requested: Record<SplitName, number> = {
    train: options.train ?? BOOK_SPLIT.train,
    validation: options.validation ?? BOOK_SPLIT.validation,
    test: options.test ?? BOOK_SPLIT.test,
  };
  checkClasses(source, options.classes);
  const classes = source.classes;
  const seed = options.shuffle ? (options.seed ?? 1337) : undefined;
  const random = seed !== undefined ? seededRandom(seed) : undefined;
  const { members, reserves, perClass } = splitClasses(source, requested, random);
  const estimate = options.shardBytes;
  const samplesPerShard = options.samplesPerShard ?? DEFAULT_SAMPLES_PER_SHARD;
  if (!(samplesPerShard >= 1)) throw new UserError(`samples per shard must be at least 1 (got ${samplesPerShard})`);
  const shards = cutShards(classes, members, random, estimate, samplesPerShard);
  dealReserves(classes, shards, reserves);
  const quality = options.quality ?? DEFAULT_QUALITY;
  if (!(quality >= 1 && quality <= 100)) throw new UserError(`JPEG quality must be 1–100 (got ${quality})`);
  const identity = {
    formatVersion: FORMAT_VERSION,
    classes,
    perClass,
    resize: options.resize ?? null,
    quality,
    folders: Boolean(options.folders),
    shards: shards.map((s) => ({
      path: s.path,
      items: s.items.map((i) => [i.name, i.size, i.className]),
      reserve: [...s.reserve].map(([c, l]) => [c, l.map((i) => [i.name, i.size])]),
    })),
  };
  const id = createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 32);
  return {
    id,
    classes,
    requested,
    perClass,
    order: random ? 'shuffled' : 'interleaved',
    seed,
    samplesPerShard: estimate ? 0 : samplesPerShard,
    resize: options.resize,
    quality,
    folders: Boolean(options.folders),
    shards,
  };
}

/** Parses '150x150' (squash to exactly that, as Keras target_size) or '150' (shortest side, aspect kept). */
export function parseResize(text: string): ResizeSpec {
  const m = /^\s*(\d+)\s*(?:[x×]\s*(\d+))?\s*$/i.exec(text);
  if (!m) throw new UserError(`--resize ${text}: expected WxH (e.g. 150x150) or a shortest side (e.g. 150)`);
  const a = Number(m[1]);
  const b = m[2] !== undefined ? Number(m[2]) : undefined;
  if (a < 1 || (b !== undefined && b < 1) || a > 16384 || (b ?? 0) > 16384)
    throw new UserError(`--resize ${text}: sizes must be 1–16384`);
  return b === undefined ? { shortestSide: a } : { width: a, height: b };
}
