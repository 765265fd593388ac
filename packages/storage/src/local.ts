// Local directory storage: atomic writes by temp file + rename.
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StorageError } from './errors.js';
import type { ByteRange, Storage, StorageEntry } from './types.js';

/** Marker in temp file names; list() hides them. */
export const TEMP_MARKER = '.catdog-tmp-';

/** The writer of a temp file, as recorded in its name (`<final>.catdog-tmp-<random>-<pid>@<host>`). */
export interface TempOwner {
  pid: number;
  /** Absent for names written before the host was recorded (`<final>.catdog-tmp-<pid>-<random>`). */
  host?: string;
}

function hostTag(): string {
  return hostname().replace(/[^A-Za-z0-9.-]/g, '_') || 'unknown';
}

/** The writer recorded in a temp file's name, or undefined when `name` is not one of our temp files. */
export function parseTempName(name: string): TempOwner | undefined {
  const at = name.lastIndexOf(TEMP_MARKER);
  if (at < 0) return undefined;
  const tail = name.slice(at + TEMP_MARKER.length);
  let m = /^[0-9a-f]+-(\d+)@(.+)$/.exec(tail);
  if (m) return { pid: Number(m[1]), host: m[2] };
  m = /^(\d+)-[0-9a-f]+$/.exec(tail);
  return m ? { pid: Number(m[1]) } : undefined;
}

/** True unless `owner` is known to be dead: a writer on this host whose process no longer exists. */
function ownerMayBeAlive(owner: TempOwner): boolean {
  if (owner.host !== hostTag()) return true; // another machine (or unknown): only age can tell
  if (owner.pid === process.pid) return true;
  try {
    process.kill(owner.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH'; // EPERM: alive, someone else's
  }
}

function localError(url: string, err: unknown): StorageError {
  const e = err as NodeJS.ErrnoException;
  const code = e?.code ?? '';
  if (code === 'ENOENT') return new StorageError(url, 'not-found', 'not found', { cause: err });
  if (code === 'EACCES' || code === 'EPERM')
    return new StorageError(url, 'access-denied', `permission denied (${code})`, { cause: err });
  if (code === 'EISDIR') return new StorageError(url, 'io', 'is a directory', { cause: err });
  if (code === 'ENOSPC') return new StorageError(url, 'io', 'no space left on device', { cause: err });
  return new StorageError(url, 'io', `${code || 'error'}: ${e?.message ?? String(err)}`, { cause: err });
}

function checkPath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) throw new StorageError(path, 'invalid-path', 'path may not contain ..');
  return parts.join(sep);
}

export class LocalStorage implements Storage {
  readonly url: string;
  readonly remote = false;
  constructor(root: string) {
    this.url = resolve(root);
  }

  urlOf(path: string): string {
    return join(this.url, checkPath(path));
  }

  async read(path: string): Promise<Buffer> {
    const file = this.urlOf(path);
    try {
      return await readFile(file);
    } catch (err) {
      throw localError(file, err);
    }
  }

  async readStream(path: string, range?: ByteRange): Promise<Readable> {
    const file = this.urlOf(path);
    // Open eagerly so a missing file fails here, not on the first read.
    const s = await stat(file).catch((err) => {
      throw localError(file, err);
    });
    if (s.isDirectory()) throw localError(file, Object.assign(new Error('is a directory'), { code: 'EISDIR' }));
    const stream = createReadStream(file, range ? { start: range.start, end: range.end } : undefined);
    await new Promise<void>((res, rej) => {
      stream.once('open', () => res());
      stream.once('error', (err) => rej(localError(file, err)));
    });
    return stream;
  }

  private tempFor(file: string): string {
    // Who wrote it goes into the name, so a later run can tell a dead writer's litter from a live writer's file.
    return `${file}${TEMP_MARKER}${randomBytes(4).toString('hex')}-${process.pid}@${hostTag()}`;
  }

  async write(path: string, data: Buffer | Uint8Array | string): Promise<void> {
    const file = this.urlOf(path);
    const temp = this.tempFor(file);
    try {
      await mkdir(dirname(file), { recursive: true });
      await writeFile(temp, data);
      await rename(temp, file);
    } catch (err) {
      await rm(temp, { force: true }).catch(() => {});
      throw localError(file, err);
    }
  }

  async writeStream(path: string, source: Readable | AsyncIterable<Uint8Array>): Promise<void> {
    const file = this.urlOf(path);
    const temp = this.tempFor(file);
    try {
      await mkdir(dirname(file), { recursive: true });
      const input = source instanceof Readable ? source : Readable.from(source);
      await pipeline(input, createWriteStream(temp));
      await rename(temp, file);
    } catch (err) {
      await rm(temp, { force: true }).catch(() => {});
      if (err instanceof StorageError) throw err;
      // Errors raised by the source (e.g. an encoder) pass through unchanged.
      if ((err as NodeJS.ErrnoException)?.syscall) throw localError(file, err);
      throw err;
    }
  }

  async stat(path: string): Promise<{ size: number } | undefined> {
    const file = this.urlOf(path);
    try {
      const s = await stat(file);
      return s.isFile() ? { size: s.size } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
        return undefined;
      throw localError(file, err);
    }
  }

  async *list(prefix = ''): AsyncIterable<StorageEntry> {
    // Walk the deepest directory the prefix names, then filter by string prefix (S3 semantics).
    const slash = prefix.lastIndexOf('/');
    const base = slash >= 0 ? prefix.slice(0, slash) : '';
    const entries: StorageEntry[] = [];
    const walk = async (relDir: string): Promise<void> => {
      const dir = join(this.url, checkPath(relDir));
      let names;
      try {
        names = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return;
        throw localError(dir, err);
      }
      for (const d of names) {
        const rel = relDir ? `${relDir}/${d.name}` : d.name;
        if (d.name.includes(TEMP_MARKER)) continue;
        if (d.isDirectory()) {
          if (rel.startsWith(prefix) || prefix.startsWith(`${rel}/`)) await walk(rel);
        } else if (rel.startsWith(prefix)) {
          // Symlinks are followed; a dangling one is listed with size 0 so the reader reports it.
          let size = 0;
          if (d.isFile()) size = (await stat(join(dir, d.name)).catch(() => ({ size: 0 }))).size;
          else if (d.isSymbolicLink()) {
            const s = await stat(join(dir, d.name)).catch(() => undefined);
            if (s?.isDirectory()) {
              await walk(rel);
              continue;
            }
            size = s?.size ?? 0;
          } else continue;
          entries.push({ path: rel, size });
        }
      }
    };
    await walk(base);
    entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    yield* entries;
  }

  async delete(path: string): Promise<void> {
    const file = this.urlOf(path);
    try {
      await rm(file, { force: true });
    } catch (err) {
      throw localError(file, err);
    }
  }

  /**
   * Removes temp files left by writers that died (kill -9, power loss) anywhere below this root: at once when the
   * writer was a process on this host that no longer exists, otherwise (another host, or a pid now reused) only
   * when the file has not been written to for `staleAfterMs`. A live writer's temp file is never removed.
   */
  async removeStaleTemp(staleAfterMs: number, now = Date.now()): Promise<{ removed: string[]; kept: string[] }> {
    const removed: string[] = [];
    const kept: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let names;
      try {
        names = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return;
        throw localError(dir, err);
      }
      for (const d of names) {
        const full = join(dir, d.name);
        if (d.isDirectory()) {
          await walk(full);
          continue;
        }
        const owner = parseTempName(d.name);
        if (!owner || !d.isFile()) continue;
        const s = await lstat(full).catch(() => undefined);
        if (!s) continue; // its writer just renamed or removed it
        const rel = full
          .slice(this.url.length + 1)
          .split(sep)
          .join('/');
        if (ownerMayBeAlive(owner) && now - s.mtimeMs < staleAfterMs) {
          kept.push(rel);
          continue;
        }
        await rm(full, { force: true }).catch((err) => {
          throw localError(full, err);
        });
        removed.push(rel);
      }
    };
    await walk(this.url);
    return { removed: removed.sort(), kept: kept.sort() };
  }

  child(prefix: string): Storage {
    return new LocalStorage(this.urlOf(prefix));
  }
}
