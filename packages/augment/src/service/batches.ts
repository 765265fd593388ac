// The Batches method: the batches a request names, made on the dataset's pool and streamed in request order. Memory
// is bounded per call: at most `workers` batches of a call are being made, and 2 × workers being made or waiting for
// HTTP/2 to take them, so a client that stops reading stalls its call, not the server.
import { stepsPerEpoch } from '../plan.js';
import { framePartsOf, makeBatch, type MadeBatch } from './batch-frames.js';
import type { MessageSink, ServerCall } from './grpc-server.js';
import type { ServiceContext } from './handlers.js';
import type { LoadMeter } from './load-meter.js';
import { BadRequest, parseBatchesRequest } from './protocol.js';

/** Batches: writes the batches the request names, in its order; a failure ends the call with its status. */
export async function batches(service: ServiceContext, call: ServerCall, sink: MessageSink): Promise<void> {
  service.authorize(call);
  const request = parseBatchesRequest(call.request);
  const served = await service.datasets.get(request);
  const steps = stepsPerEpoch(served.size, request.batchSize, false);
  const bad = request.batches.find((b) => b >= steps);
  if (bad !== undefined) throw new BadRequest(`batch ${bad} is past the epoch's last batch (${steps - 1})`);
  served.calls++;
  let unsent = request.batches.length;
  service.meter.queued(unsent);
  const signal = new CallSignal(sink);
  try {
    const inFlight = new BatchesInFlight({
      sink,
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
    });
    while (unsent > 0) {
      const made = await inFlight.next();
      if (!made) return;
      const memory = made.result.memory;
      // The pixels go to the socket from the batch memory itself: it is reused once HTTP/2 has taken them.
      inFlight.write(framePartsOf(request, made, service.meter.load()), () => {
        if (memory && served.spare.length < 2 * service.workers) served.spare.push(memory);
      });
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

  constructor(sink: MessageSink) {
    sink.onCancel(() => {
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
  sink: MessageSink;
  signal: CallSignal;
  /** The requested batch indices, in the order they are sent. */
  indices: number[];
  /** Batches being made at once (and twice as many made or unflushed). */
  workers: number;
  make: (index: number) => Promise<MadeBatch>;
  meter: LoadMeter;
}

/** A call's batches between the pool and the transport, in request order. */
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

  /** Writes a batch's frame; it holds its place among the `workers` until HTTP/2 has taken it (then `taken`). */
  write(parts: readonly Uint8Array[], taken: () => void): void {
    this.unflushed++;
    this.o.sink.send(parts, () => {
      this.unflushed--;
      taken();
      this.o.signal.notify();
    });
  }

  /** Starts making the next batches while there is room. */
  private launch(): void {
    const { signal, indices, workers, make } = this.o;
    while (
      !signal.cancelled &&
      this.launched < indices.length &&
      this.making.length < workers &&
      this.making.length + this.unflushed < 2 * workers
    ) {
      const batch = make(indices[this.launched++]);
      batch.catch(() => {}); // surfaced when next() awaits it
      this.making.push(batch);
    }
  }
}
