// Types of build-wasm.mjs for the TypeScript that imports it (test/backend/wasm-build.test.ts).
/** packages/backend/wasm. */
export declare const wasmDir: string;
/** Every build output from the sources alone, as { absolute path: bytes }. */
export declare function buildWasm(): Promise<Record<string, Uint8Array<ArrayBuffer>>>;
/** The outputs whose committed bytes differ from a fresh build (paths relative to packages/backend). */
export declare function staleOutputs(): Promise<string[]>;
/** The source with each product-loop accumulation a += b·c as f32x4.relaxed_madd(b, c, a). */
export declare function fusedMultiplyAdd(source: string): string;
