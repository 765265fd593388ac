// Where the augmentation servers are, and the client's credentials for them.
import { readFileSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { UserError } from '@catdog/errors';

export interface AugmentServiceOptions {
  /**
   * 'host:port,host:port' (or a list). A host name resolving to several addresses (a Kubernetes headless Service)
   * gives one server per address, re-resolved every 10 s so that servers which join get work.
   */
  addresses: string | string[];
  /** The servers' shared token (readServiceToken); null or absent sends none. */
  token?: string | null;
  /** Connect with TLS: `ca` (PEM) to trust, else the system's roots. */
  tls?: { ca?: Uint8Array } | boolean;
  /** Fail the stream after this long with no reachable server. Default 60 000 ms. */
  unavailableTimeoutMs?: number;
  /** How a host name becomes addresses (IPs). Default: DNS, every address (dns.lookup with all). */
  resolve?: (host: string) => Promise<string[]>;
  /** Re-resolve host names this often, so that servers which join get work. Default 10 000 ms. */
  refreshMs?: number;
}

const dnsAddresses = async (host: string) => (await lookup(host, { all: true })).map((f) => f.address);

export interface ServiceAddress {
  host: string;
  port: number;
}

/** Parses 'host:port,[v6]:port,…'; throws RangeError naming a bad entry. */
export function parseServiceAddresses(spec: string | readonly string[]): ServiceAddress[] {
  const entries = (typeof spec === 'string' ? spec.split(',') : spec.flatMap((s) => s.split(',')))
    .map((s) => s.trim())
    .filter(Boolean);
  if (entries.length === 0) throw new RangeError('augment service: no address given (host:port[,host:port…])');
  return entries.map((entry) => {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[3]) : NaN;
    if (!m || port < 1 || port > 65535)
      throw new RangeError(`augment service: bad address ${JSON.stringify(entry)} (expected host:port)`);
    return { host: m[1] ?? m[2], port };
  });
}

/** 'ip:port' targets for an address: itself for an IP literal, else every address its name resolves to. */
export async function resolveServiceAddress(a: ServiceAddress, resolve = dnsAddresses): Promise<string[]> {
  const target = (ip: string) => (isIP(ip) === 6 ? `[${ip}]:${a.port}` : `${ip}:${a.port}`);
  if (isIP(a.host)) return [target(a.host)];
  return [...new Set((await resolve(a.host)).map(target))].sort();
}

/**
 * The shared token: the file's first line when a file is given, else $CATDOG_AUGMENT_TOKEN, else null.
 * Throws a UserError for an unreadable or empty file (never printing its contents).
 */
export function readServiceToken(file?: string, env: NodeJS.ProcessEnv = process.env): string | null {
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new UserError(
        `cannot read the token file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        { code: 'config' },
      );
    }
    const token = text.split(/\r?\n/)[0].trim();
    if (!token) throw new UserError(`the token file ${file} is empty`, { code: 'config' });
    return token;
  }
  const token = env.CATDOG_AUGMENT_TOKEN?.trim();
  return token ? token : null;
}
