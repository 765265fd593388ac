// WebDataset tar shards: <member key>.jpg + <member key>.cls, deterministic headers so any worker writes identical bytes.
// Member keys follow WebDataset's rule (the key is the file name up to its first dot), so a sample's logical key
// ('cat.123', the source stem the augmentation seeds its transforms from) is escaped into one without dots:
// '.' → '_', '_' → '%5F', '%' → '%25' ('cat.123' → 'cat_123'). The escape is reversible, so readers return the
// logical key unchanged. Datasets of formatVersion 1 kept the dots ('cat.123.jpg'); readers still take them.
import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import * as tar from 'tar-stream';
import { UserError } from '@catdog/errors';
import type { Storage } from '@catdog/storage';
import { BOOK_CLASSES, type ShardInfo } from './manifest.js';

export interface EncodedSample {
  /** Source file stem, e.g. 'cat.123'. */
  key: string;
  label: number;
  className: string;
  /** Encoded image bytes (JPEG for prepared datasets). */
  bytes: Uint8Array;
  /** Image extension without the dot, e.g. 'jpg'. */
  ext: string;
}

/** Fixed tar header fields: no timestamps, owners or modes from the machine that wrote the shard. */
function header(name: string, size: number): tar.Header {
  return {
    name,
    size,
    mode: 0o644,
    mtime: new Date(0),
    uid: 0,
    gid: 0,
    uname: '',
    gname: '',
    type: 'file',
    linkname: '',
    devmajor: 0,
    devminor: 0,
  };
}

/** Streams one shard into storage while hashing it; returns its size and sha256. */
export class ShardWriter {
  private readonly pack = tar.pack();
  private readonly hash = createHash('sha256');
  private bytes = 0;
  private readonly done: Promise<void>;
  count = 0;
  readonly classCounts: Record<string, number> = {};

  constructor(
    storage: Storage,
    readonly path: string,
  ) {
    const meter = new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        this.hash.update(chunk);
        this.bytes += chunk.length;
        cb(null, chunk);
      },
    });
    const out = new PassThrough();
    this.pack.pipe(meter).pipe(out);
    this.pack.on('error', (err) => out.destroy(err));
    this.done = storage.writeStream(path, out);
    // Avoid an unhandled rejection before finish() is awaited.
    this.done.catch(() => {});
  }

  private entry(name: string, data: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pack.entry(header(name, data.length), Buffer.from(data.buffer, data.byteOffset, data.length), (err) =>
        err ? reject(err) : resolve(),
      );
    });
  }

  async add(sample: { key: string; label: number; className: string; bytes: Uint8Array; ext: string }): Promise<void> {
    const member = memberKeyOf(sample.key);
    await this.entry(`${member}.${sample.ext}`, sample.bytes);
    await this.entry(`${member}.cls`, Buffer.from(String(sample.label)));
    this.count++;
    this.classCounts[sample.className] = (this.classCounts[sample.className] ?? 0) + 1;
  }

  async finish(): Promise<ShardInfo> {
    this.pack.finalize();
    await this.done;
    return {
      path: this.path,
      count: this.count,
      bytes: this.bytes,
      sha256: this.hash.digest('hex'),
      classCounts: this.classCounts,
    };
  }

  /** Stops the upload/write; resolves once nothing is left under the shard's name (temp file or multipart removed). */
  async abort(err: Error): Promise<void> {
    this.pack.destroy(err);
    await this.done.catch(() => {});
  }
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Hashes a stored object by streaming it; bounded memory. */
export async function hashObject(storage: Storage, path: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of await storage.readStream(path)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

/**
 * How member names map to (key, extension):
 * - 'webdataset' (formatVersion ≥ 2): WebDataset's rule, the key is everything before the first dot of the basename
 *   (directory included), then unescaped back to the logical key;
 * - 'legacy' (formatVersion 1): split at the last dot, the key keeps the source's dots ('cat.123.jpg' → 'cat.123');
 * - 'auto': 'webdataset' when the extension it gives is one this format writes (an image or 'cls'), else 'legacy'.
 *   For a shard read without its manifest: a formatVersion 1 key with no dot but a '_' ('IMG_1.jpg') would come back
 *   as 'IMG.1', so pass memberNamingOf(manifest.formatVersion) whenever the manifest is known.
 */
export type MemberNaming = 'webdataset' | 'legacy' | 'auto';

/** The member naming a manifest's formatVersion implies. */
export function memberNamingOf(formatVersion: number): MemberNaming {
  return formatVersion >= 2 ? 'webdataset' : 'legacy';
}

/** A logical key's member key: no dots, reversible ('cat.123' → 'cat_123', 'IMG_1.a' → 'IMG%5F1_a'). */
export function memberKeyOf(key: string): string {
  return key.replace(/[%_.]/g, (c) => (c === '.' ? '_' : c === '_' ? '%5F' : '%25'));
}

/** The inverse of memberKeyOf. */
export function keyOfMember(member: string): string {
  return member.replace(/%5F|%25|_/gi, (c) => (c === '_' ? '.' : c.toUpperCase() === '%5F' ? '_' : '%'));
}

/** Splits a member name into [logical key, extension] under a naming (see MemberNaming). */
export function splitMemberName(name: string, naming: MemberNaming = 'auto'): [string, string] {
  const slash = name.lastIndexOf('/') + 1;
  const base = name.slice(slash);
  if (naming !== 'legacy') {
    const first = base.indexOf('.');
    if (first > 0) {
      const ext = base.slice(first + 1);
      if (naming === 'webdataset' || KNOWN_EXTS.has(ext.toLowerCase()))
        return [keyOfMember(name.slice(0, slash + first)), ext];
    } else if (naming === 'webdataset') return [keyOfMember(name), ''];
  }
  const dot = base.lastIndexOf('.');
  if (dot <= 0) return [name, ''];
  return [name.slice(0, slash + dot), base.slice(dot + 1)];
}

/**
 * The largest member a shard may hold (1 GiB; an image member is a few hundred kB): a tar header declaring more is
 * refused before its data is read, so a hostile header cannot make a reader buffer terabytes.
 */
export const MAX_MEMBER_BYTES = 2 ** 30;

/**
 * Why a tar member may not be in a shard, or undefined: shards hold only regular files with relative names inside
 * the shard's folder (no links, directories or devices, no absolute names, no `..`, no NUL) of a sane size. prep
 * writes nothing else; readers refuse such shards rather than hand a key like `../x` to code that names files by key.
 */
export function memberProblem(header: Pick<tar.Header, 'name' | 'type' | 'size'>): string | undefined {
  const name = header.name;
  const shown = JSON.stringify(name);
  if (header.type !== 'file') return `member ${shown} is a ${header.type}, not a regular file`;
  if (name.startsWith('/') || /^[A-Za-z]:[\\/]/.test(name)) return `member ${shown} has an absolute name`;
  if (name.split(/[\\/]/).includes('..')) return `member ${shown} names a parent folder (..)`;
  if (name.includes('\0')) return `member ${shown} contains a NUL byte`;
  if ((header.size ?? 0) > MAX_MEMBER_BYTES)
    return `member ${shown} declares ${header.size} bytes (more than the ${MAX_MEMBER_BYTES} a member may hold)`;
  return undefined;
}

const IMAGE_EXTS = new Set(['jpg', 'jpeg', 'png', 'webp', 'gif', 'tif', 'tiff', 'bmp', 'avif']);
const KNOWN_EXTS = new Set([...IMAGE_EXTS, 'cls']);

/**
 * Parses tar bytes (a Readable) into samples, grouping adjacent members by key (as WebDataset's group_by_keys).
 * Errors are UserErrors with code 'corrupt-shard' naming `where`.
 */
export async function* parseShard(
  input: Readable,
  where: string,
  classes: string[] = BOOK_CLASSES,
  naming: MemberNaming = 'auto',
): AsyncGenerator<EncodedSample> {
  let pending: { key: string; bytes?: Uint8Array; ext?: string; label?: number } | undefined;
  const flush = function* (): Generator<EncodedSample> {
    if (!pending) return;
    const p = pending;
    pending = undefined;
    if (!p.bytes || p.label === undefined) throw corrupt(where, `sample ${p.key} lacks an image or a .cls label`);
    const className = classes[p.label];
    if (className === undefined)
      throw corrupt(where, `sample ${p.key} has label ${p.label}, outside the ${classes.length} classes`);
    yield { key: p.key, label: p.label, className, bytes: p.bytes, ext: p.ext ?? 'jpg' };
  };
  try {
    for await (const entry of tarMembers(input, where)) {
      const data = entry.data;
      const [key, ext] = splitMemberName(entry.header.name, naming);
      if (pending && pending.key !== key) yield* flush();
      pending ??= { key };
      if (ext === 'cls') {
        const label = Number.parseInt(data.toString('utf8').trim(), 10);
        if (!Number.isInteger(label)) throw corrupt(where, `${entry.header.name} is not a decimal label`);
        pending.label = label;
      } else if (IMAGE_EXTS.has(ext.toLowerCase())) {
        pending.bytes = data;
        pending.ext = ext;
      }
    }
    yield* flush();
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw corrupt(where, `unreadable tar shard (${(err as Error).message})`, err);
  }
}

/** Members read ahead of the consumer, at most. */
const MEMBERS_AHEAD = 16;

/**
 * A tar stream's members, each read whole. tar-stream's entry events rather than its async iterators: about twice
 * as fast for shards of many small members, and the reader's CPU is taken from the augmentation workers.
 */
async function* tarMembers(input: Readable, where: string): AsyncGenerator<{ header: tar.Header; data: Buffer }> {
  const extract = tar.extract();
  const queue: { header: tar.Header; data: Buffer }[] = [];
  let finished = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  let paused: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  extract.on('entry', (header, stream, next) => {
    // Checked from the header, before any of the member's data is buffered.
    const problem = memberProblem(header);
    if (problem) {
      failure ??= corrupt(where, problem);
      stream.resume();
      notify();
      return;
    }
    const chunks: Buffer[] = [];
    stream.on('data', (c) => chunks.push(c as Buffer));
    // The extract reports the same failure; an entry destroyed with it must not throw on its own.
    stream.on('error', () => {});
    stream.on('end', () => {
      // Copied (concat), never a slice: a slice would keep tar-stream's whole read buffer alive.
      queue.push({ header, data: Buffer.concat(chunks) });
      if (queue.length < MEMBERS_AHEAD) next();
      else paused = next;
      notify();
    });
  });
  extract.on('finish', () => {
    finished = true;
    notify();
  });
  extract.on('error', (err) => {
    failure ??= err;
    notify();
  });
  input.on('error', (err) => extract.destroy(err));
  input.pipe(extract);
  try {
    for (;;) {
      if (failure) throw failure;
      const member = queue.shift();
      if (member) {
        if (paused && queue.length < MEMBERS_AHEAD) {
          const resume = paused;
          paused = undefined;
          resume();
        }
        yield member;
        continue;
      }
      if (finished) return;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    if (!finished) {
      input.unpipe(extract);
      extract.destroy();
    }
  }
}

function corrupt(where: string, why: string, cause?: unknown): UserError {
  return new UserError(`${where}: ${why}`, { code: 'corrupt-shard', cause });
}

export interface ReadShardOptions {
  /** Check size and sha256 against the manifest before yielding anything (the shard is buffered). Default false. */
  verify?: boolean;
  /** Class names indexed by label. Default ['cats', 'dogs']. */
  classes?: string[];
  /** Member naming (memberNamingOf(manifest.formatVersion)). Default 'auto'. */
  naming?: MemberNaming;
}

/** Streams a shard's samples. With verify, a mismatch throws naming the shard. */
export async function* readShard(
  storage: Storage,
  shard: Pick<ShardInfo, 'path'> & Partial<ShardInfo>,
  options: ReadShardOptions = {},
): AsyncGenerator<EncodedSample> {
  const where = storage.urlOf(shard.path);
  if (options.verify) {
    const data = await storage.read(shard.path);
    checkShardBytes(data, shard, where);
    yield* parseShard(Readable.from([data]), where, options.classes, options.naming);
    return;
  }
  yield* parseShard(await storage.readStream(shard.path), where, options.classes, options.naming);
}

export function checkShardBytes(data: Uint8Array, shard: Partial<ShardInfo>, where: string): void {
  if (shard.bytes !== undefined && data.length !== shard.bytes) {
    throw corrupt(where, `shard is ${data.length} bytes, manifest says ${shard.bytes}`);
  }
  if (shard.sha256 !== undefined) {
    const actual = sha256(data);
    if (actual !== shard.sha256) throw corrupt(where, `sha256 mismatch (got ${actual}, manifest says ${shard.sha256})`);
  }
}
