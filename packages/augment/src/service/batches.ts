// The Batches method: the batches a request names, made on the dataset's pool and streamed in request order. Memory
// is bounded per call: at most `workers` batches of a call are being made or waiting for the transport to take them,
// so a client that stops reading stalls its call, not the server.
import * as grpc from '@grpc/grpc-js';
import { stepsPerEpoch } from '../plan.js';
import { frameOf, makeBatch, type MadeBatch } from './batch-frames.js';
import { type CallStatus, statusOf } from './call-status.js';
import type { ServiceContext } from './handlers.js';
import type { FrameBuffers } from './frame-buffers.js';
import type { LoadMeter } from './load-meter.js';
import { BadRequest, parseBatchesRequest } from './protocol.js';

type BatchesCall = grpc.ServerWritableStream<Buffer, Buffer>;

/** Batches: ends the stream after the last batch, or answers the error that stopped it (unless the client left). */
export function batchesHandler(service: ServiceContext): grpc.handleServerStreamingCall<Buffer, Buffer> {
  return (call) => {
    const refuse = (status: CallStatus) => call.emit('error', status);
    if (!service.authorize(call, refuse)) return;
    const signal = new CallSignal(call);
    streamBatches(service, call, signal).then(
      () => {
        if (!signal.cancelled) call.end();
      },
      (err: unknown) => {
        if (signal.cancelled) return;
        const status = statusOf(err);
        if (status.code === grpc.status.INTERNAL) service.log(`augment serve: ${status.details}`);
        refuse(status);
      },
    );
  };
}

/** Checks the request against the dataset, then writes its batches; the dataset counts the call as busy meanwhile. */
async function streamBatches(service: ServiceContext, call: BatchesCall, signal: CallSignal): Promise<void> {
  const request = parseBatchesRequest(call.request);
  const served = await service.datasets.get(request);
  const steps = stepsPerEpoch(served.size, request.batchSize, false);
  const bad = request.batches.find((b) => b >= steps);
  if (bad !== undefined) throw new BadRequest(`batch ${bad} is past the epoch's last batch (${steps - 1})`);
  served.calls++;
  let unsent = request.batches.length;
  service.meter.queued(unsent);
  try {
    const inFlight = new BatchesInFlight({
      call,
      signal,
      indices: request.batches,
      workers: service.workers,
      make: (index) => {
        service.meter.making++;
        const made = makeBatch(served, request, index);
        const done = () => service.meter.making--;
        made.then(done, done);
        return made;
      },
      meter: service.meter,
      frames: service.frames,
    });
    while (unsent > 0) {
      const made = await inFlight.next();
      if (!made) return;
      const frame = frameOf(request, made, service.meter.load(), (bytes) => service.frames.take(bytes));
      const memory = made.result.memory;
      if (memory && served.spare.length < 2 * service.workers) served.spare.push(memory); // the frame holds a copy
      inFlight.write(frame);
      unsent--;
      service.meter.sentBatch(made.result.kept.length);
    }
  } finally {
    served.calls--;
    service.meter.dropped(unsent);
  }
}

/** Wakes a call's writer when it may go on: a write was flushed, or the client cancelled the call. */
class CallSignal {
  cancelled = false;
  private wake: (() => void) | null = null;

  constructor(call: BatchesCall) {
    call.on('cancelled', () => {
      this.cancelled = true;
      this.notify();
    });
  }

  notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** Resolves at the next notify(). */
  waitForNotify(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wake = resolve;
    });
  }
}

interface BatchesInFlightOptions {
  call: BatchesCall;
  signal: CallSignal;
  /** The requested batch indices, in the order they are sent. */
  indices: number[];
  /** Batches being made or unflushed at once. */
  workers: number;
  make: (index: number) => Promise<MadeBatch>;
  meter: LoadMeter;
  frames: FrameBuffers;
}

/** A call's batches between the pool and the transport, in request order: at most `workers` at once. */
class BatchesInFlight {
  private readonly making: Promise<MadeBatch>[] = [];
  private launched = 0;
  /** frames written that the transport has not taken yet */
  private unflushed = 0;

  constructor(private readonly o: BatchesInFlightOptions) {}

  /** The next batch in request order, once made (waiting for room to start making it); null once cancelled. */
  async next(): Promise<MadeBatch | null> {
    const { signal } = this.o;
    this.launch();
    while (this.making.length === 0 && !signal.cancelled) {
      // Nothing being made: every place is held by a batch the transport has not taken (the client is slow).
      this.o.meter.waitingOnClients++;
      try {
        await signal.waitForNotify();
      } finally {
        this.o.meter.waitingOnClients--;
      }
      this.launch();
    }
    if (signal.cancelled) return null;
    const made = await this.making.shift()!;
    return signal.cancelled ? null : made;
  }

  /**
   * Writes a batch's frame; it holds its place among the `workers` until the transport takes it (grpc-js has copied
   * it into its message then, so the frame's buffer is reused).
   */
  write(frame: Buffer): void {
    this.unflushed++;
    this.o.call.write(frame, () => {
      this.unflushed--;
      this.o.frames.give(frame);
      this.o.signal.notify();
    });
  }

  /** Starts making the next batches while there is room. */
  private launch(): void {
    const { signal, indices, workers, make } = this.o;
    while (!signal.cancelled && this.launched < indices.length && this.making.length + this.unflushed < workers) {
      const batch = make(indices[this.launched++]);
      batch.catch(() => {}); // surfaced when next() awaits it
      this.making.push(batch);
    }
  }
}
