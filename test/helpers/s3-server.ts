// A real S3-protocol server (s3rver, objects on disk) on 127.0.0.1 for tests.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';

export interface LoopbackS3 {
  /** e.g. http://127.0.0.1:40123 */
  endpoint: string;
  /** Environment a subprocess needs to reach the server with the standard AWS variables. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** Starts s3rver on an ephemeral loopback port with the given buckets; also sets process.env for in-process clients. */
export async function startLoopbackS3(buckets: string[] = ['test-bucket']): Promise<LoopbackS3> {
  const directory = await mkdtemp(join(tmpdir(), 'catdog-s3rver-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const address = (await server.run()) as AddressInfo;
  const endpoint = `http://127.0.0.1:${address.port}`;
  const env = {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_S3: endpoint,
  };
  Object.assign(process.env, env);
  return {
    endpoint,
    env,
    async stop() {
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
