// The server's frame buffers, reused: a batch's frame (8.6 MB at 32 × 150 × 150 float32) is written into a buffer
// that an earlier frame of about the same size left, once the transport has taken that one, instead of a new
// allocation per batch (fresh pages to fault in, and external memory that sets the garbage collector off).

/** Spare room per buffer, so that frames whose headers differ by a few bytes fit the same one. */
const SLACK = 64 * 1024;

export class FrameBuffers {
  private readonly free: ArrayBuffer[] = [];

  constructor(private readonly keep: number) {}

  /** A buffer of exactly `bytes` (a view of a spare one when one fits). */
  take(bytes: number): Buffer {
    const i = this.free.findIndex((b) => b.byteLength >= bytes && b.byteLength <= bytes + 2 * SLACK);
    const buffer = i >= 0 ? this.free.splice(i, 1)[0] : new ArrayBuffer(bytes + SLACK);
    return Buffer.from(buffer, 0, bytes);
  }

  /** Hands back a buffer from take() once nothing reads it any more (the transport has taken the frame). */
  give(frame: Buffer): void {
    if (this.free.length < this.keep && frame.buffer instanceof ArrayBuffer) this.free.push(frame.buffer);
  }
}
