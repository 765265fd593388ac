// Deterministic randomness keyed by strings: the same (seed, epoch, key) always gives the same stream,
// whatever process, worker or batch draws it. Hand-written because Math.random cannot be seeded.

/** 64-bit hash of a string as two 32-bit words (cyrb53-style mixing, both halves used). */
export function hashString(text: string, seed = 0): [number, number] {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return [h1 >>> 0, h2 >>> 0];
}

/** A seeded generator of uniform doubles in [0, 1) (sfc32, 53-bit output). */
export interface Rng {
  /** uniform in [0, 1) */
  random(): number;
  /** uniform in [low, high) */
  uniform(low: number, high: number): number;
  /** uniform integer in [0, n) */
  int(n: number): number;
}

export function createRng(a: number, b: number, c: number, d: number): Rng {
  a >>>= 0;
  b >>>= 0;
  c >>>= 0;
  d >>>= 0;
  const next32 = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) next32(); // warm up: decorrelate nearby seeds
  const random = (): number => ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992;
  return {
    random,
    uniform: (low, high) => low + (high - low) * random(),
    int: (n) => Math.floor(random() * n),
  };
}

/** The generator for one sample's transform in one epoch. */
export function sampleRng(seed: number, epoch: number, key: string): Rng {
  const [a, b] = hashString(key, seed | 0);
  const [c, d] = hashString(`${seed}:${epoch}:${key}`, 0x9e3779b9);
  return createRng(a, b, c, d);
}

/**
 * The epoch's order: keys sorted by a hash of (seed, epoch, key). Depends only on the set of keys,
 * not on how the source listed them, and removing a key leaves the others' relative order intact.
 */
export function epochOrder(keys: readonly string[], seed: number, epoch: number): number[] {
  const n = keys.length;
  const hi = new Uint32Array(n);
  const lo = new Uint32Array(n);
  const salt = `${seed}/${epoch}/`;
  for (let i = 0; i < n; i++) {
    const [h1, h2] = hashString(salt + keys[i], seed | 0);
    hi[i] = h1;
    lo[i] = h2;
  }
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((x, y) => hi[x] - hi[y] || lo[x] - lo[y] || (keys[x] < keys[y] ? -1 : keys[x] > keys[y] ? 1 : 0));
  return idx;
}
