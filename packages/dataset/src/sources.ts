// Image sources: Kaggle's flat folder (cat.N.jpg), a folder per class (cats/…), or Kaggle's train.zip; local or S3.
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import yauzl from 'yauzl';
import { UserError } from '@catdog/errors';
import { openStorage, resolveLocation, type Storage, type StorageOptions } from '@catdog/storage';

export type SourceLayout = 'flat' | 'class-folders' | 'zip';

export interface SourceItem {
  /** Sample key: the file's stem, e.g. 'cat.123'. */
  key: string;
  className: string;
  /** Where it came from, relative to the source root (or the zip entry name). */
  name: string;
  /** Extension as named (lower case, no dot); the content decides the real format. */
  ext: string;
  /** Size in bytes as listed. */
  size: number;
  /** Numeric index in flat names (cat.123 → 123). */
  index?: number;
  read(): Promise<Buffer>;
}

/** A source file that is not a sample, and why (so nothing is left out without a word). */
export interface IgnoredFile {
  name: string;
  reason: string;
}

export interface Source {
  url: string;
  layout: SourceLayout;
  /** Class names, sorted alphabetically (label = position). */
  classes: string[];
  /** Per class, in numeric/natural order. */
  byClass: Map<string, SourceItem[]>;
  /** Files that do not fit the layout (not counted as samples), each with the reason. */
  ignored: IgnoredFile[];
  close(): Promise<void>;
}

const FLAT_NAME = /^([A-Za-z][A-Za-z0-9_-]*)\.(\d+)\.([A-Za-z0-9]+)$/;

/** Natural comparison without locale: digit runs compare numerically ('cat.2' < 'cat.10'). */
export function naturalCompare(a: string, b: string): number {
  const re = /(\d+)|(\D+)/g;
  const pa = a.match(re) ?? [];
  const pb = b.match(re) ?? [];
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === y) continue;
    const nx = /^\d/.test(x);
    const ny = /^\d/.test(y);
    if (nx && ny) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
      if (x.length !== y.length) return x.length - y.length;
    }
    return x < y ? -1 : 1;
  }
  return pa.length - pb.length;
}

/** Flat-name class: 'cat' → 'cats' (Kaggle's names map to the book's folder names). */
export function flatClassName(prefix: string): string {
  const p = prefix.toLowerCase();
  return p.endsWith('s') ? p : `${p}s`;
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function stemAndExt(name: string): [string, string] {
  const base = basename(name);
  const dot = base.lastIndexOf('.');
  return dot > 0 ? [base.slice(0, dot), base.slice(dot + 1).toLowerCase()] : [base, ''];
}

interface Listed {
  path: string;
  size: number;
}

/** Groups listed files into a layout: flat at the top (or inside one single folder), else one folder per class. */
export function classify(
  files: Listed[],
  url: string,
  reader: (path: string) => () => Promise<Buffer>,
): { layout: 'flat' | 'class-folders'; byClass: Map<string, SourceItem[]>; ignored: IgnoredFile[] } {
  const ignored: IgnoredFile[] = [];
  const visible: Listed[] = [];
  for (const f of files) {
    const parts = f.path.split('/');
    if (parts.includes('__MACOSX')) ignored.push({ name: f.path, reason: 'macOS archive metadata (__MACOSX)' });
    else if (parts.some((p) => p.startsWith('.')))
      ignored.push({ name: f.path, reason: 'hidden file or folder (name starts with .)' });
    // Node lists bytes that are not UTF-8 as U+FFFD, a name no file has: such a file could not be read back.
    else if (f.path.includes('\uFFFD'))
      ignored.push({ name: f.path, reason: 'name is not valid UTF-8 (rename the file to read it)' });
    else visible.push(f);
  }
  const flatIn = (dir: string) =>
    visible.filter((f) => {
      const inDir = dir
        ? f.path.startsWith(`${dir}/`) && !f.path.slice(dir.length + 1).includes('/')
        : !f.path.includes('/');
      return inDir && FLAT_NAME.test(basename(f.path));
    });
  let flat = flatIn('');
  if (flat.length === 0) {
    const dirs = new Set(
      visible.filter((f) => f.path.includes('/')).map((f) => f.path.split('/').slice(0, -1).join('/')),
    );
    if (dirs.size === 1) {
      const [only] = dirs;
      const candidate = flatIn(only);
      // A single folder of cat.N/dog.N files (e.g. train/ inside Kaggle's zip) is still the flat layout.
      if (
        candidate.length > 0 &&
        new Set(candidate.map((f) => FLAT_NAME.exec(basename(f.path))![1].toLowerCase())).size > 1
      )
        flat = candidate;
    }
  }
  const byClass = new Map<string, SourceItem[]>();
  const add = (item: SourceItem) => {
    const list = byClass.get(item.className) ?? [];
    list.push(item);
    byClass.set(item.className, list);
  };
  if (flat.length > 0) {
    const used = new Set(flat.map((f) => f.path));
    const top = flat[0].path.includes('/') ? flat[0].path.slice(0, flat[0].path.lastIndexOf('/') + 1) : '';
    for (const f of visible) {
      if (used.has(f.path)) continue;
      const inTop = f.path.startsWith(top) && !f.path.slice(top.length).includes('/');
      ignored.push({
        name: f.path,
        reason: inTop
          ? 'name is not <class>.<number>.<ext> (the flat layout takes cat.N.jpg / dog.N.jpg)'
          : `in a subfolder (the flat layout reads only ${top ? `${top} ` : 'the top folder'})`,
      });
    }
    for (const f of flat) {
      const m = FLAT_NAME.exec(basename(f.path))!;
      add({
        key: `${m[1]}.${m[2]}`,
        className: flatClassName(m[1]),
        name: f.path,
        ext: m[3].toLowerCase(),
        size: f.size,
        index: Number(m[2]),
        read: reader(f.path),
      });
    }
    for (const list of byClass.values()) list.sort((a, b) => a.index! - b.index! || naturalCompare(a.name, b.name));
    refuseDuplicateKeys(byClass, url);
    return { layout: 'flat', byClass, ignored };
  }
  // Class folders: <class>/<file>, possibly below one common parent folder.
  const parts = visible.map((f) => f.path.split('/'));
  let depth = 0;
  while (parts.length > 0 && parts.every((p) => p.length > depth + 2 && p[depth] === parts[0][depth])) depth++;
  for (const f of visible) {
    const p = f.path.split('/');
    if (p.length < depth + 2) {
      ignored.push({
        name: f.path,
        reason: 'not inside a class folder (the class-folder layout takes <class>/<file>)',
      });
      continue;
    }
    const [stem, ext] = stemAndExt(f.path);
    add({ key: stem, className: p[depth], name: f.path, ext, size: f.size, read: reader(f.path) });
  }
  for (const list of byClass.values())
    list.sort((a, b) => naturalCompare(a.key, b.key) || naturalCompare(a.name, b.name));
  refuseDuplicateKeys(byClass, url);
  return { layout: 'class-folders', byClass, ignored };
}

/**
 * Keys name samples in shards and must be unique across the whole source. Two files with one stem (cat.20.jpg and
 * cat.20.png, or cats/x.jpg and dogs/x.jpg) are refused before anything is written: no rule for picking one is
 * obviously right, and a dataset with the key twice would fail its own verify.
 */
function refuseDuplicateKeys(byClass: Map<string, SourceItem[]>, url: string): void {
  const owners = new Map<string, string>();
  const clashes: string[] = [];
  for (const list of byClass.values()) {
    for (const item of list) {
      const other = owners.get(item.key);
      if (other !== undefined) clashes.push(`${other} and ${item.name} (key ${item.key})`);
      else owners.set(item.key, item.name);
    }
  }
  if (clashes.length) {
    const shown = clashes.slice(0, 5).join('; ') + (clashes.length > 5 ? `; … ${clashes.length - 5} more` : '');
    throw new UserError(
      `${url}: ${clashes.length} pair${clashes.length > 1 ? 's' : ''} of files share a sample key (keys are file names without the extension and must be unique): ${shown}; remove or rename one of each pair`,
      { code: 'bad-source' },
    );
  }
}

function sortedClasses(byClass: Map<string, SourceItem[]>): string[] {
  return [...byClass.keys()].sort();
}

async function streamToBuffer(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function openZipFile(path: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.open(path, { lazyEntries: true, autoClose: false, decodeStrings: true }, (err, zip) =>
      err ? reject(err) : resolve(zip!),
    ),
  );
}

async function openZip(url: string, storage: Storage, file: string): Promise<Source> {
  let localPath: string;
  let tempDir: string | undefined;
  if (storage.remote) {
    // yauzl needs random access: copy the archive to a temp file once (streamed, bounded memory).
    tempDir = await mkdtemp(join(tmpdir(), 'catdog-zip-'));
    localPath = join(tempDir, 'source.zip');
    await pipeline(await storage.readStream(file), createWriteStream(localPath));
  } else {
    localPath = storage.urlOf(file);
  }
  let zip: yauzl.ZipFile;
  try {
    zip = await openZipFile(localPath);
  } catch (err) {
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
    throw new UserError(`${url}: not a readable zip archive (${(err as Error).message})`, { code: 'bad-source' });
  }
  const entries = new Map<string, yauzl.Entry>();
  await new Promise<void>((resolve, reject) => {
    zip.on('entry', (entry: yauzl.Entry) => {
      if (!entry.fileName.endsWith('/')) entries.set(entry.fileName, entry);
      zip.readEntry();
    });
    zip.on('end', () => resolve());
    zip.on('error', (err) =>
      reject(new UserError(`${url}: corrupt zip archive (${(err as Error).message})`, { code: 'bad-source' })),
    );
    zip.readEntry();
  });
  const reader = (name: string) => () =>
    new Promise<Buffer>((resolve, reject) => {
      zip.openReadStream(entries.get(name)!, (err, stream) => {
        if (err) return reject(err);
        streamToBuffer(stream!).then(resolve, reject);
      });
    });
  const listed = [...entries.values()].map((e) => ({ path: e.fileName, size: e.uncompressedSize }));
  const { byClass, ignored } = classify(listed, url, reader);
  return {
    url,
    layout: 'zip',
    classes: sortedClasses(byClass),
    byClass,
    ignored,
    async close() {
      zip.close();
      if (tempDir) await rm(tempDir, { recursive: true, force: true });
    },
  };
}

/** Opens a source folder or .zip (local path or s3:// URL) and lists its images per class. */
export async function openSource(location: string, options: StorageOptions = {}): Promise<Source> {
  const url = resolveLocation(location);
  if (/\.zip$/i.test(url)) {
    const slash = url.lastIndexOf('/');
    const parent = openStorage(url.slice(0, slash) || '/', options);
    const file = url.slice(slash + 1);
    if (!(await parent.stat(file))) throw new UserError(`${url}: source archive not found`, { code: 'not-found' });
    return openZip(url, parent, file);
  }
  const storage = openStorage(url, options);
  const files: Listed[] = [];
  for await (const e of storage.list()) files.push(e);
  if (files.length === 0) throw new UserError(`${url}: source is empty or does not exist`, { code: 'bad-source' });
  const { layout, byClass, ignored } = classify(files, url, (path) => () => storage.read(path));
  return { url, layout, classes: sortedClasses(byClass), byClass, ignored, close: async () => {} };
}
