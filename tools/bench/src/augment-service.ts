// Benchmark: the augmentation service on one machine vs the in-process pool on the same cores.
// Two `augment serve` processes on 127.0.0.1 with workers/2 threads each, against createBatchStream with `workers`
// threads in this process; the same source, seed and batches. Reports images/s delivered to the consumer, bytes on
// the wire per batch and the consumer's CPU per batch.
// Usage: npx nx run bench:augment-service -- [--source <dataset dir|s3 url|image folder>] [--workers 2] [--batch 32]
//        [--size 150] [--limit 2000] [--passes 3] [--seed 1]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import {
  BOOK_AUGMENTATION,
  createBatchStream,
  readServiceToken,
  type BatchStream,
  type BatchStreamOptions,
} from '@catdog/augment';
import { reportError, UsageError } from '@catdog/errors';
import { startAugmentServe, type AugmentServeProcess } from '../../../test/helpers/augment-servers.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));

function options() {
  const { values } = parseArgs({
    options: {
      source: { type: 'string', default: join(root, '..', 'shared', 'datasets', 'dogs-vs-cats', 'train') },
      workers: { type: 'string', default: String(availableParallelism()) },
      batch: { type: 'string', default: '32' },
      size: { type: 'string', default: '150' },
      limit: { type: 'string', default: '2000' },
      passes: { type: 'string', default: '3' },
      seed: { type: 'string', default: '1' },
    },
  });
  const int = (name: keyof typeof values, min: number) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}`);
    return n;
  };
  const source = values.source!;
  return {
    source: /^s3:\/\//.test(source) ? source : resolve(process.env.INIT_CWD ?? process.cwd(), source),
    workers: int('workers', 2),
    batch: int('batch', 1),
    size: int('size', 8),
    limit: int('limit', 1),
    passes: int('passes', 1),
    seed: int('seed', 0),
  };
}

/** CPU milliseconds (user + system) a process has used so far, its threads included (Linux /proc). */
function processCpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  // Fields after the command name: state is field 3; utime and stime are fields 14 and 15, in clock ticks.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ: 100 on Linux
}

interface Run {
  imagesPerSecond: number;
  passes: number[];
  cpuMsPerBatch: number;
  batches: number;
}

/** Times `passes` runs of `perPass` batches after a warm-up; CPU is this process's (user + system). */
async function measure(stream: BatchStream, perPass: number, passes: number): Promise<Run> {
  await stream.ready();
  const rates: number[] = [];
  const cpu0 = process.cpuUsage();
  let batches = 0;
  for (let p = 0; p < passes; p++) {
    const t = performance.now();
    let images = 0;
    for (let b = 0; b < perPass; b++) {
      const r = await stream.next();
      if (r.done) throw new Error('the stream ended early');
      images += r.value.shape[0];
      r.value.release();
      batches++;
    }
    rates.push(images / ((performance.now() - t) / 1000));
  }
  const cpu = process.cpuUsage(cpu0);
  const sorted = [...rates].sort((a, b) => a - b);
  return {
    imagesPerSecond: sorted[Math.floor(sorted.length / 2)],
    passes: rates,
    cpuMsPerBatch: (cpu.user + cpu.system) / 1000 / batches,
    batches,
  };
}

async function main(): Promise<number> {
  const o = options();
  const dir = mkdtempSync(join(tmpdir(), 'catdog-bench-service-'));
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `bench-${process.pid}-${Date.now()}\n`, { mode: 0o600 });
  const servers: AugmentServeProcess[] = [];
  try {
    const perServer = Math.max(1, Math.floor(o.workers / 2));
    const common: BatchStreamOptions = {
      source: o.source,
      batchSize: o.batch,
      targetSize: [o.size, o.size],
      augment: BOOK_AUGMENTATION,
      seed: o.seed,
      epochs: Infinity,
    };
    console.log(
      `source ${o.source}, ${o.size}×${o.size}, batch ${o.batch}, ${o.passes} passes of ${o.limit} images, book augmentation, ${availableParallelism()} cores`,
    );

    const local = await createBatchStream({ ...common, workers: o.workers });
    const perPass = Math.ceil(Math.min(o.limit, local.size) / o.batch);
    const inProcess = await measure(local, perPass, o.passes);
    const localStats = local.stats();
    await local.close();
    console.log(
      `in_process workers=${o.workers} images_per_s=${inProcess.imagesPerSecond.toFixed(0)} passes=[${inProcess.passes.map((r) => r.toFixed(0)).join(', ')}] ` +
        `process_cpu_ms_per_batch=${inProcess.cpuMsPerBatch.toFixed(1)} (workers included) main_thread_ms_per_batch=${localStats.mainThreadMsPerBatch.toFixed(2)}`,
    );

    const started = await Promise.all(
      [0, 1].map(() => startAugmentServe({ tokenFile, workers: perServer, stderr: 'inherit' })),
    );
    servers.push(...started);
    const token = readServiceToken(tokenFile);
    const remote = await createBatchStream({
      ...common,
      augmentService: { addresses: started.map((s) => s.address).join(','), token },
    });
    await remote.ready();
    const serversCpu = () => started.reduce((n, s) => n + processCpuMs(s.process.pid), 0);
    const serverCpu0 = serversCpu();
    const service = await measure(remote, perPass, o.passes);
    const serverCpuMsPerBatch = (serversCpu() - serverCpu0) / service.batches;
    const st = remote.stats();
    await remote.close();
    const wireBytes = st.servers!.reduce((n, s) => n + s.bytes, 0) / Math.max(1, st.batches);
    console.log(
      `service servers=2×${perServer} workers images_per_s=${service.imagesPerSecond.toFixed(0)} passes=[${service.passes.map((r) => r.toFixed(0)).join(', ')}] ` +
        `client_cpu_ms_per_batch=${service.cpuMsPerBatch.toFixed(2)} servers_cpu_ms_per_batch=${serverCpuMsPerBatch.toFixed(1)} (workers included) ` +
        `wire_bytes_per_batch=${wireBytes.toFixed(0)} ` +
        `(pixels ${(o.batch * o.size * o.size * 3 * 4).toFixed(0)})` +
        (st.retries ? ` reassigned=${st.retries}` : ''),
    );
    for (const s of st.servers!)
      console.log(
        `  server ${s.address} batches=${s.batches} images_per_s=${s.imagesPerSecond.toFixed(0)} queue_depth=${s.queueDepth}`,
      );
    console.log(
      `augment-service ratio=${(service.imagesPerSecond / inProcess.imagesPerSecond).toFixed(3)} ` +
        `in_process_images_per_s=${inProcess.imagesPerSecond.toFixed(0)} service_images_per_s=${service.imagesPerSecond.toFixed(0)} ` +
        `wire_bytes_per_batch=${wireBytes.toFixed(0)} client_cpu_ms_per_batch=${service.cpuMsPerBatch.toFixed(2)}`,
    );
    return 0;
  } finally {
    // A clean stop (exit 0) is part of what is measured: say so when a server did not stop cleanly.
    const exits = await Promise.all(servers.map((s) => s.stop('SIGTERM')));
    exits.forEach((e, i) => {
      if (e.code !== 0) console.error(`augment serve ${servers[i].address} stopped with ${e.code ?? e.signal}`);
    });
    rmSync(dir, { recursive: true, force: true });
  }
}

try {
  process.exitCode = await main();
} catch (err) {
  process.exitCode = reportError(err);
}
