// The model runs here, off the page's thread: onnxruntime-web (WebAssembly, SIMD; threads when the page is
// cross-origin isolated), one session, tiles in batches of the graph's size.
"use strict";
importScripts("vendor/ort.wasm.min.js");
ort.env.wasm.wasmPaths = new URL("vendor/", self.location.href).href;

let session = null, batch = 1, size = 0;

async function load({ bytes, threads, tile, fixedBatch }) {
  ort.env.wasm.numThreads = threads;
  session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  size = tile;
  const meta = session.inputMetadata && session.inputMetadata[0];
  const shape = meta && meta.shape ? meta.shape : null;
  batch = shape && typeof shape[0] === "number" ? shape[0] : fixedBatch || 1;
  return {
    inputs: session.inputNames, outputs: session.outputNames,
    input: meta ? { type: meta.type, shape } : null, batch, threads: ort.env.wasm.numThreads,
    isolated: self.crossOriginIsolated === true,
  };
}

async function run({ pixels, n }) {
  // pixels: n tiles of (3, size, size) uint8; the graph's batch is filled with zero tiles when n is smaller
  const per = 3 * size * size;
  const out = { boxes: [], scores: [], labels: [], k: 0 };
  const started = performance.now();
  for (let start = 0; start < n; start += batch) {
    const data = new Uint8Array(batch * per);
    data.set(pixels.subarray(start * per, Math.min(n, start + batch) * per));
    const result = await session.run({ images: new ort.Tensor("uint8", data, [batch, 3, size, size]) });
    const k = result.scores.dims[1];
    out.k = k;
    for (let i = 0; i < Math.min(batch, n - start); i++) {
      out.boxes.push(result.boxes.data.slice(i * k * 4, (i + 1) * k * 4));
      out.scores.push(result.scores.data.slice(i * k, (i + 1) * k));
      out.labels.push(Array.from(result.labels.data.slice(i * k, (i + 1) * k), Number));
    }
  }
  out.ms = performance.now() - started;
  return out;
}

self.onmessage = async (event) => {
  const { id, type } = event.data;
  try {
    const result = type === "load" ? await load(event.data) : await run(event.data);
    self.postMessage({ id, ok: true, result });
  } catch (error) {
    self.postMessage({ id, ok: false, error: String(error && error.message ? error.message : error) });
  }
};
