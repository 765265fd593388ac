// The service's gRPC server, on node:http2 directly: gRPC's wire protocol (HTTP/2 POST, 5-byte message prefix,
// grpc-status trailers) for our few methods, unary and server-streaming, so any gRPC client (grpc-js, grpcurl,
// Kubernetes' grpc probe) calls it as before. Why not grpc-js' server: it copies every 8.6 MB batch once more into
// a message of its own (a fresh buffer per batch, which kept the collector busy: 15 ms of GC per batch), where here
// a batch's pixels go to the socket from the pool's batch memory itself (writev of prefix, header and pixels), and
// that memory is reused once HTTP/2 has sent them. Flow control is HTTP/2's: a write's callback fires once the
// client's window took it, so a client that stops reading holds its call's batches, not more.
import http2 from 'node:http2';
import { status as Status } from '@grpc/grpc-js';

export { Status };

/** A call's failure as the client sees it: a gRPC status code and a message naming the cause. */
export class CallFailure extends Error {
  constructor(
    readonly code: Status,
    readonly details: string,
  ) {
    super(details);
  }
}

export interface ServerCall {
  /** The request's headers (gRPC metadata), e.g. authorization. */
  readonly metadata: http2.IncomingHttpHeaders;
  /** The client's address, for logs. */
  readonly peer: string;
  /** The request message. */
  readonly request: Buffer;
}

/** Where a streaming method writes its messages. */
export interface MessageSink {
  /**
   * Sends one message, the concatenation of `parts` (written as they are: no copy); `taken` is called once HTTP/2
   * has taken the bytes (sent, or dropped with the call), after which the parts' memory may be reused.
   */
  send(parts: readonly Uint8Array[], taken: () => void): void;
  /** True once the client has cancelled the call or gone away. */
  readonly cancelled: boolean;
  /** Called once, when the client cancels the call or goes away. */
  onCancel(listener: () => void): void;
}

export type Method =
  | { kind: 'unary'; handle: (call: ServerCall) => Promise<Buffer> | Buffer }
  | { kind: 'stream'; handle: (call: ServerCall, sink: MessageSink) => Promise<void> };

export interface GrpcServerOptions {
  /** Methods by path (`/package.Service/Method`). */
  methods: ReadonlyMap<string, Method>;
  /** A request message larger than this is refused with RESOURCE_EXHAUSTED. */
  maxRequestBytes: number;
  maxConcurrentStreams: number;
  tls?: { cert: Buffer; key: Buffer };
  /** How an error that is not a CallFailure is answered (and reported); default INTERNAL with its message. */
  failureOf: (err: unknown) => CallFailure;
  log: (line: string) => void;
}

const PREFIX_BYTES = 5;

export class GrpcServer {
  private readonly server: http2.Http2Server | http2.Http2SecureServer;
  private readonly sessions = new Set<http2.ServerHttp2Session>();

  constructor(private readonly o: GrpcServerOptions) {
    const settings: http2.Settings = { maxConcurrentStreams: o.maxConcurrentStreams, enablePush: false };
    // maxSessionMemory (MiB) counts a connection's queued outgoing data: a few batches per call in flight.
    const common = { settings, maxSessionMemory: 1024 };
    this.server = o.tls
      ? http2.createSecureServer({ ...common, cert: o.tls.cert, key: o.tls.key, ALPNProtocols: ['h2'] })
      : http2.createServer(common);
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.on('close', () => this.sessions.delete(session));
      session.on('error', () => {}); // a connection reset: its streams close and report it
    });
    this.server.on('sessionError', () => {});
    this.server.on('stream', (stream, headers) => this.call(stream, headers));
  }

  /** Listens on host:port (0: a free one); resolves to the port bound. */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const failed = (err: Error) => reject(err);
      this.server.once('error', failed);
      this.server.listen(port, host, () => {
        this.server.off('error', failed);
        const address = this.server.address();
        resolve(typeof address === 'object' && address ? address.port : port);
      });
    });
  }

  /** Stops accepting connections and calls; running calls get graceMs to end, then their connections are cut. */
  async close(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.sessions) session.close(); // GOAWAY: no new calls, running ones go on
    const timer = setTimeout(() => {
      for (const session of this.sessions) session.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  }

  private call(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => {}); // the client went away: 'close' ends the call
    if (headers[':method'] !== 'POST' || !String(headers['content-type'] ?? '').startsWith('application/grpc')) {
      stream.respond({ ':status': 415 }, { endStream: true });
      return;
    }
    const reply = new Reply(stream);
    const method = this.o.methods.get(String(headers[':path']));
    if (!method) {
      reply.finish(new CallFailure(Status.UNIMPLEMENTED, `unknown method ${headers[':path']}`));
      return;
    }
    this.readRequest(stream)
      .then((request) => {
        const call: ServerCall = { metadata: headers, peer: peerOf(stream), request };
        return method.kind === 'unary'
          ? Promise.resolve(method.handle(call)).then((message) => reply.send([message], () => {}))
          : method.handle(call, reply);
      })
      .then(
        () => reply.finish(null),
        (err: unknown) => {
          if (reply.cancelled) return;
          const failure = err instanceof CallFailure ? err : this.o.failureOf(err);
          if (failure.code === Status.INTERNAL) this.o.log(`augment serve: ${failure.details}`);
          reply.finish(failure);
        },
      )
      // The answer could not be written (the stream went away meanwhile): the call is over either way.
      .catch(() => stream.destroy());
  }

  /** The call's one request message, at most maxRequestBytes. */
  private readRequest(stream: http2.ServerHttp2Stream): Promise<Buffer> {
    const limit = this.o.maxRequestBytes;
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      const fail = (failure: CallFailure) => {
        stream.removeAllListeners('data');
        stream.resume(); // drain the rest unread
        reject(failure);
      };
      stream.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > PREFIX_BYTES + limit)
          fail(
            new CallFailure(Status.RESOURCE_EXHAUSTED, `request larger than max (${bytes - PREFIX_BYTES} vs ${limit})`),
          );
        else chunks.push(chunk);
      });
      stream.once('close', () => reject(new CallFailure(Status.CANCELLED, 'the client left before its request ended')));
      stream.once('end', () => {
        if (bytes > PREFIX_BYTES + limit) return;
        const body = Buffer.concat(chunks);
        if (body.length < PREFIX_BYTES) return reject(new CallFailure(Status.INVALID_ARGUMENT, 'no request message'));
        if (body[0] !== 0) return reject(new CallFailure(Status.UNIMPLEMENTED, 'compressed requests are not accepted'));
        const length = body.readUInt32BE(1);
        if (length > limit)
          return reject(new CallFailure(Status.RESOURCE_EXHAUSTED, `request larger than max (${length} vs ${limit})`));
        if (body.length !== PREFIX_BYTES + length)
          return reject(new CallFailure(Status.INVALID_ARGUMENT, 'expected exactly one request message'));
        resolve(body.subarray(PREFIX_BYTES));
      });
    });
  }
}

/** One call's answer: response headers before the first message, then messages, then the status trailers. */
class Reply implements MessageSink {
  private responded = false;
  private finished = false;
  cancelled = false;
  private trailers: http2.OutgoingHttpHeaders = {};
  private readonly cancelListeners: (() => void)[] = [];

  constructor(private readonly stream: http2.ServerHttp2Stream) {
    stream.once('close', () => {
      if (this.finished) return;
      this.finished = this.cancelled = true;
      for (const listener of this.cancelListeners.splice(0)) listener();
    });
  }

  onCancel(listener: () => void): void {
    if (this.cancelled) listener();
    else this.cancelListeners.push(listener);
  }

  send(parts: readonly Uint8Array[], taken: () => void): void {
    const { stream } = this;
    if (this.finished || stream.closed || stream.destroyed) {
      taken();
      return;
    }
    if (!this.responded) {
      this.responded = true;
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-encoding': 'identity' },
        { waitForTrailers: true },
      );
      stream.once('wantTrailers', () => {
        if (!stream.destroyed) stream.sendTrailers(this.trailers);
      });
    }
    const prefix = Buffer.allocUnsafe(PREFIX_BYTES);
    prefix[0] = 0;
    prefix.writeUInt32BE(
      parts.reduce((n, p) => n + p.byteLength, 0),
      1,
    );
    stream.cork();
    stream.write(prefix);
    parts.forEach((part, i) => stream.write(part, i === parts.length - 1 ? () => taken() : undefined));
    stream.uncork();
  }

  /** Ends the call: OK (null) or the failure, in trailers (or trailers only, before any message). */
  finish(failure: CallFailure | null): void {
    if (this.finished || this.stream.closed || this.stream.destroyed) return;
    this.finished = true;
    const status = failure
      ? { 'grpc-status': String(failure.code), 'grpc-message': encodeURI(failure.details) }
      : { 'grpc-status': String(Status.OK) };
    if (this.responded) {
      this.trailers = status;
      this.stream.end();
    } else {
      this.stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', ...status }, { endStream: true });
    }
  }
}

function peerOf(stream: http2.ServerHttp2Stream): string {
  const socket = stream.session?.socket;
  return socket ? `${socket.remoteAddress}:${socket.remotePort}` : 'unknown';
}
