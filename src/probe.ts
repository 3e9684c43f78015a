/** Capability report of this device (filled out by the runtime issue). */
export async function probe(): Promise<Record<string, unknown>> {
  const wasmSimd = WebAssembly.validate(
    new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]),
  );
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
  return {
    wasmSimd,
    sharedArrayBuffer: typeof SharedArrayBuffer !== 'undefined',
    logicalCores: nav?.hardwareConcurrency ?? null,
  };
}
