// Shared helpers for dataset/prep tests: small sources built from real Kaggle images, broken files, a zip writer.
import { copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { kaggleTrainDir } from '../helpers/fixtures.js';

export async function tempDir(label: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `catdog-${label}-`));
}

/** A flat Kaggle-style folder with cat.0..cat.{n-1} and dog.0..dog.{n-1} copied from the shared dataset. */
export async function flatSource(n: number, dir?: string): Promise<string> {
  const root = dir ?? (await tempDir('src'));
  await mkdir(root, { recursive: true });
  await Promise.all(
    Array.from({ length: n }, (_, i) => [`cat.${i}.jpg`, `dog.${i}.jpg`])
      .flat()
      .map((f) => copyFile(join(kaggleTrainDir, f), join(root, f))),
  );
  return root;
}

/** A minimal zip writer (stored entries), enough to build a train.zip like Kaggle's for tests. */
export async function writeZip(path: string, entries: { name: string; data: Buffer }[]): Promise<void> {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const crc = crc32(e.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0, 6);
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt32LE(0, 10);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(e.data.length, 18);
    local.writeUInt32LE(e.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt32LE(0, 12);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(e.data.length, 20);
    central.writeUInt32LE(e.data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, e.data);
    centrals.push(central, name);
    offset += 30 + name.length + e.data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  await writeFile(path, Buffer.concat([...locals, cd, end]));
}
