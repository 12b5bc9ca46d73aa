// The tablet page: loads the model (bundled, or opened from the device), reads its card, scores photos in a worker,
// shows candidates, takes confirm/reject, and exports CSV, GeoJSON and KML with the fields of `ordnance score`.
/* global Ordnance, exifr */
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  app: null, card: null, modelSha256: "", modelName: "", graph: null, photos: [], candidates: [],
  tiles: 0, inferMs: 0, scoreMs: 0, startedUtc: "", ready: false, busy: false, errors: [],
  raw: new URLSearchParams(location.search).has("raw") ? [] : null, // each window's model output, for checks
};
window.ordnanceTablet = state; // read by the tests and by anyone debugging on the device

function showError(message) {
  state.errors.push(message);
  $("error").textContent = message;
}

function status(text) { $("status").textContent = text; }

// ---- the worker ----
let worker = null, nextId = 1;
const pending = new Map();
function call(message, transfer = []) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...message, id }, transfer);
  });
}
function startWorker() {
  worker = new Worker("worker.js");
  worker.onmessage = (event) => {
    const { id, ok, result, error } = event.data;
    const p = pending.get(id);
    pending.delete(id);
    if (ok) p.resolve(result); else p.reject(new Error(error));
  };
}

async function sha256(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- the model ----
async function loadModel(buffer, name) {
  state.ready = false;
  $("photos").disabled = true;
  $("error").textContent = "";
  let card;
  try {
    card = Ordnance.readCard(buffer, state.app.contract);
  } catch (error) {
    showError(`${name}: ${error.message}`);
    return false;
  }
  const threads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  if (worker) worker.terminate();
  startWorker();
  let graph;
  try {
    graph = await call({ type: "load", bytes: buffer.slice(0), threads, tile: card.tile_size_px, fixedBatch: card.batch_size });
    Ordnance.checkGraph(graph.inputs, graph.outputs, graph.input, card, state.app.contract);
  } catch (error) {
    showError(`${name}: ${error.message}`);
    return false;
  }
  state.card = card;
  state.graph = graph;
  state.modelName = name;
  state.modelSha256 = await sha256(buffer);
  $("threshold").value = card.score_threshold;
  renderCard();
  status(`model ready: WebAssembly, ${graph.threads} thread${graph.threads > 1 ? "s" : ""}` +
    `${graph.isolated ? "" : " (page not cross-origin isolated: one thread)"}; ${navigator.onLine ? "online" : "offline"}`);
  $("photos").disabled = false;
  state.ready = true;
  return true;
}

function renderCard() {
  const c = state.card, parity = c.parity && c.parity.fp32;
  const rows = [
    ["model", `${c.model_name} ${c.model_version}`],
    ["file", `${state.modelName} (sha256 ${state.modelSha256.slice(0, 16)})`],
    ["classes", c.class_names.join(", ")],
    ["GSD", c.gsd_m > 0 ? `${(c.gsd_m * 100).toFixed(2)} cm/px` : "not set"],
    ["tile / overlap", `${c.tile_size_px} / ${c.overlap_px} px`],
    ["score threshold", `${c.score_threshold} (${c.operating_point})`],
    ["weights", `${c.quantization}${c.test_flips > 1 ? `, ${c.test_flips} views averaged` : ""}`],
    ["parity", parity ? `${(parity.matched_share * 100).toFixed(2)}% of ${parity.detections_compared} detections matched, max score diff ${Number(parity.max_score_diff).toExponential(1)}` : "no report"],
  ];
  const table = $("card");
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th"), td = document.createElement("td");
    th.textContent = k; td.textContent = v;
    tr.append(th, td);
    return tr;
  }));
}

// ---- photos ----
function threshold() {
  const value = Number($("threshold").value);
  return value > 0 && value <= 1 ? value : state.card.score_threshold;
}

const MAX_GEOTIFF_PX = 64e6; // a "small" GeoTIFF: a tablet holds its pixels in memory; larger ones go to ordnance score

async function readPhoto(file) {
  let tags = null;
  try {
    tags = await exifr.parse(file, { tiff: true, exif: true, gps: true, xmp: true, translateValues: false, mergeOutput: true });
  } catch (error) {
    tags = null; // a photo without readable tags is scored, its candidates stay in pixels
  }
  const orientation = tags && tags.Orientation;
  if (orientation && orientation !== 1) {
    // the browser turns such a photo upright, the scorer and the camera's heading take its pixels as stored
    throw new Error(`EXIF orientation ${orientation}: a photo stored turned is not placed by the tablet; score it with ordnance score`);
  }
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const pose = Ordnance.readPose(tags);
  const geometry = pose ? Ordnance.frameGeometry(pose, bitmap.width, bitmap.height) : null;
  return { bitmap, width: bitmap.width, height: bitmap.height, pose, geometry, geo: null, mask: null,
    gsd: geometry && geometry.gsd_m ? geometry.gsd_m : null, source: geometry ? "frame" : "no GSD (no camera pose)" };
}

async function readGeoTIFF(file) {
  const tiff = await GeoTIFF.fromBlob(file);
  const image = await tiff.getImage();
  const width = image.getWidth(), height = image.getHeight();
  if (width * height > MAX_GEOTIFF_PX) throw new Error(`${width} x ${height} px is more than a tablet holds; score it with ordnance score`);
  const bits = image.getBitsPerSample(), bands = image.getSamplesPerPixel();
  if (bands < 3 || bits !== 8) throw new Error(`${bands} band(s) of ${bits} bits: the tablet takes 8-bit RGB GeoTIFFs`);
  const dir = image.fileDirectory;
  const matrix = dir.ModelTransformation || dir.getValue?.("ModelTransformation");
  if (matrix && (matrix[1] !== 0 || matrix[4] !== 0)) throw new Error("its grid is rotated; score it with ordnance score");
  const crs = Ordnance.geotiffCrs(image.getGeoKeys());
  const [ox, oy] = image.getOrigin(), [rx, ry] = image.getResolution();
  const planes = await image.readRasters({ samples: bands >= 4 ? [0, 1, 2, 3] : [0, 1, 2] });
  const nodata = image.getGDALNoData();
  let internalMask = null; // GDAL's internal mask: a further image of the file flagged as a transparency mask
  for (let k = 1; k < (await tiff.getImageCount()); k++) {
    const other = await tiff.getImage(k);
    const type = other.fileDirectory.NewSubfileType ?? other.fileDirectory.getValue?.("NewSubfileType");
    if ((type & 4) && other.getWidth() === width && other.getHeight() === height) {
      internalMask = (await other.readRasters({ samples: [0] }))[0];
      break;
    }
  }
  const rgba = new Uint8ClampedArray(width * height * 4), mask = new Uint8Array(width * height);
  for (let i = 0; i < width * height; i++) {
    let valid = internalMask ? internalMask[i] > 0 : bands >= 4 ? planes[3][i] > 0 : true;
    if (nodata !== null && valid) valid = planes[0][i] !== nodata || planes[1][i] !== nodata || planes[2][i] !== nodata;
    mask[i] = valid ? 1 : 0;
    if (valid) { rgba[4 * i] = planes[0][i]; rgba[4 * i + 1] = planes[1][i]; rgba[4 * i + 2] = planes[2][i]; }
    rgba[4 * i + 3] = 255;
  }
  const bitmap = await createImageBitmap(new ImageData(rgba, width, height), { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const centreLat = crs.geographic ? oy + (height / 2) * ry : 0;
  const gsd = Ordnance.gridGsd(crs, rx, ry, centreLat);
  return { bitmap, width, height, pose: null, geometry: null, mask, gsd, source: `EPSG:${crs.epsg}`,
    geo: { crs, ox, oy, rx, ry } };
}

function tilePixels(ctx, bitmap, tile, size, srcTile) {
  // one window as (3, size, size) uint8 planes and its valid mask; a window of srcTile source pixels is resampled to
  // size (the canvas's own filter: near, not equal to, the scorer's GDAL resampling)
  const outW = Math.min(size, Ordnance.pyRound((tile.width * size) / srcTile));
  const outH = Math.min(size, Ordnance.pyRound((tile.height * size) / srcTile));
  ctx.clearRect(0, 0, size, size);
  ctx.imageSmoothingEnabled = outW !== tile.width || outH !== tile.height;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, tile.col, tile.row, tile.width, tile.height, 0, 0, outW, outH);
  const rgba = ctx.getImageData(0, 0, size, size).data;
  const plane = size * size, out = new Uint8Array(3 * plane);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const p = y * size + x, q = 4 * p;
      out[p] = rgba[q]; out[plane + p] = rgba[q + 1]; out[2 * plane + p] = rgba[q + 2];
    }
  }
  return { pixels: out, valid: (cx, cy) => cx < outW && cy < outH };
}

async function scorePhoto(file, index, total) {
  const card = state.card, size = card.tile_size_px;
  const isTiff = /\.tiff?$/i.test(file.name);
  const input = isTiff ? await readGeoTIFF(file) : await readPhoto(file);
  const { bitmap, width, height, pose, geometry, gsd, geo, mask } = input;
  let scale = 1, note = gsd ? "" : input.source;
  if (gsd && card.gsd_m > 0) {
    const ratio = card.gsd_m / gsd;
    note = `${input.source} ${(gsd * 100).toFixed(2)} cm/px, model ${(card.gsd_m * 100).toFixed(2)} cm/px`;
    if (Math.abs(ratio - 1) > state.app.gsd_tolerance) { scale = ratio; note += `; resampled x${(1 / ratio).toFixed(3)}`; }
  }
  const srcTile = Math.max(1, Ordnance.pyRound(size * scale));
  const overlap = Math.min(Ordnance.pyRound(card.overlap_px * scale), srcTile - 1);
  const tiles = Ordnance.tileGrid(width, height, srcTile, overlap);
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  const rows = [], limit = threshold(), batch = Math.max(1, state.graph.batch), factor = srcTile / size;
  for (let start = 0; start < tiles.length; start += batch) {
    const group = tiles.slice(start, start + batch);
    const windows = group.map((tile) => {
      const w = tilePixels(ctx, bitmap, tile, size, srcTile);
      if (!mask) return w;
      // masked or nodata pixels hold no image: no detection is kept there (the scorer's valid mask)
      const inside = w.valid;
      return { pixels: w.pixels, valid: (cx, cy) => inside(cx, cy) &&
        mask[Math.min(height - 1, tile.row + Math.floor(cy * factor)) * width + Math.min(width - 1, tile.col + Math.floor(cx * factor))] === 1 };
    });
    const pixels = new Uint8Array(group.length * 3 * size * size);
    windows.forEach((w, i) => pixels.set(w.pixels, i * 3 * size * size));
    const out = await call({ type: "run", pixels, n: group.length }, [pixels.buffer]);
    state.inferMs += out.ms;
    state.tiles += group.length;
    group.forEach((tile, i) => {
      if (state.raw) {
        state.raw.push({ photo: file.name, tile: tile.index, col: tile.col, row: tile.row, k: out.k,
          boxes: Array.from(out.boxes[i]), scores: Array.from(out.scores[i]), labels: out.labels[i] });
      }
      const found = Ordnance.windowDetections(tile, out.boxes[i], out.scores[i], out.labels[i], out.k, limit, size,
        factor, windows[i].valid);
      for (const r of found) rows.push([tile.index, ...r]);
    });
    $("progress").value = start + group.length;
    $("progress").max = tiles.length;
    $("progress-text").textContent = `${index + 1} of ${total}: ${start + group.length} of ${tiles.length} tiles, ` +
      `${(state.inferMs / state.tiles).toFixed(0)} ms per tile`;
  }
  const merged = Ordnance.mergeRows(rows);
  const photo = { name: file.name, width, height, pose, geometry, note, scale, tiles: tiles.length, bitmap, candidates: [] };
  if (geo) photo.geometry = { note: `map grid ${input.source}` };
  for (const m of merged) {
    const cx = (m[0] + m[2]) / 2, cy = (m[1] + m[3]) / 2;
    let where, x = cx, y = cy, crs = "pixel", epsg = 0;
    if (geo) {
      x = geo.ox + cx * geo.rx;
      y = geo.oy + cy * geo.ry;
      const [lon, lat] = geo.crs.geographic ? [x, y] : proj4(geo.crs.proj4, "WGS84", [x, y]);
      where = { lon, lat, location: "map", radius: NaN };
      crs = `EPSG:${geo.crs.epsg}`;
      epsg = geo.crs.epsg;
    } else {
      where = pose ? Ordnance.place(pose, geometry, cx, cy, width, height) : { lon: NaN, lat: NaN, location: "pixel", radius: NaN };
    }
    const g = gsd || NaN;
    photo.candidates.push({
      class: card.class_names[m[5]], score: Math.round(m[4] * 1e6) / 1e6, lon: where.lon, lat: where.lat, x, y,
      crs, epsg, location: where.location, position_uncertainty_m: where.radius,
      bbox_px: m.slice(0, 4).map((v) => v.toFixed(1)).join(","), width_m: (m[2] - m[0]) * g, height_m: (m[3] - m[1]) * g,
      gsd_m: g, source: file.name, model_name: card.model_name, model_version: card.model_version,
      model_sha256: state.modelSha256, processed_utc: state.startedUtc, review_status: "unreviewed",
      also_seen_as: card.class_names.filter((_, b) => (m[7] >> b) & 1).join(","), box: m.slice(0, 4),
    });
  }
  return photo;
}

async function scorePhotos(files) {
  if (!state.ready || state.busy) return;
  state.busy = true;
  $("error").textContent = "";
  state.photos = []; state.candidates = []; state.tiles = 0; state.inferMs = 0;
  if (state.raw) state.raw = [];
  state.startedUtc = new Date().toISOString().replace(/\.\d+Z$/, "+00:00");
  const started = performance.now();
  const sorted = [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  try {
    for (let i = 0; i < sorted.length; i++) {
      try {
        state.photos.push(await scorePhoto(sorted[i], i, sorted.length));
      } catch (error) {
        showError(`${sorted[i].name}: cannot be scored (${error.message})`);
      }
    }
    let id = 1;
    const decided = storedDecisions();
    for (const photo of state.photos) {
      for (const c of photo.candidates) {
        c.id = id++;
        c.review_status = decided[decisionKey(c)] || "unreviewed";
        state.candidates.push(c);
      }
    }
    state.scoreMs = performance.now() - started;
    render();
  } finally {
    state.busy = false;
  }
}

// ---- results and review ----
const COLOURS = { unreviewed: "#f0b429", confirmed: "#3ddc84", rejected: "#ff6b6b" };

function drawPhoto(canvas, photo) {
  const scale = Math.min(1, 1280 / photo.width);
  canvas.width = Math.round(photo.width * scale);
  canvas.height = Math.round(photo.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(photo.bitmap, 0, 0, canvas.width, canvas.height);
  ctx.lineWidth = 2;
  ctx.font = "14px system-ui";
  for (const c of photo.candidates) {
    const [x0, y0, x1, y1] = c.box.map((v) => v * scale);
    const r = Math.max(8, (Math.max(x1 - x0, y1 - y0) / 2) + 6);
    ctx.strokeStyle = ctx.fillStyle = COLOURS[c.review_status];
    ctx.beginPath();
    ctx.arc((x0 + x1) / 2, (y0 + y1) / 2, r, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.fillText(`${c.id}`, (x0 + x1) / 2 + r + 2, (y0 + y1) / 2 + 5);
  }
}

// Decisions are kept in the browser's storage as they are taken (a tablet may close the page at any moment), keyed
// by the model, the image and the candidate's box; the same image scored again by the same model gets them back.
const DECISIONS = "ordnance-tablet-decisions";
function decisionKey(c) { return `${c.model_sha256}|${c.source}|${c.bbox_px}|${c.class}`; }
function storedDecisions() {
  try { return JSON.parse(localStorage.getItem(DECISIONS) || "{}"); } catch (error) { return {}; }
}
function storeDecision(candidate) {
  const all = storedDecisions();
  if (candidate.review_status === "unreviewed") delete all[decisionKey(candidate)];
  else all[decisionKey(candidate)] = candidate.review_status;
  try { localStorage.setItem(DECISIONS, JSON.stringify(all)); } catch (error) { showError(`decisions not saved on the device (${error.message}); export them now`); }
}

function decide(candidate, decision, row, canvas, photo) {
  candidate.review_status = candidate.review_status === decision ? "unreviewed" : decision;
  storeDecision(candidate);
  row.className = candidate.review_status;
  drawPhoto(canvas, photo);
  summary();
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render() {
  const results = $("results");
  results.replaceChildren();
  for (const photo of state.photos) {
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = `${photo.name}: ${photo.candidates.length} candidates; ${photo.geometry ? photo.geometry.note : "no GNSS position: candidates in pixels only"}; ${photo.note}`;
    const canvas = document.createElement("canvas");
    drawPhoto(canvas, photo);
    const table = document.createElement("table");
    table.className = "candidates";
    const head = document.createElement("tr");
    for (const h of ["id", "class", "score", "position", "radius", "", ""]) head.append(Object.assign(document.createElement("th"), { textContent: h }));
    table.append(head);
    for (const c of photo.candidates) {
      const tr = document.createElement("tr");
      tr.dataset.id = c.id;
      tr.className = c.review_status;
      const position = Number.isFinite(c.lat) ? `${c.lat.toFixed(7)}, ${c.lon.toFixed(7)} (${c.location})` : `pixel ${c.x.toFixed(0)}, ${c.y.toFixed(0)}`;
      const radius = Number.isFinite(c.position_uncertainty_m) ? `${c.position_uncertainty_m.toFixed(1)} m` : "unknown";
      const confirm = Object.assign(document.createElement("button"), { textContent: "Confirm", className: "confirm" });
      const reject = Object.assign(document.createElement("button"), { textContent: "Reject", className: "reject" });
      confirm.onclick = () => decide(c, "confirmed", tr, canvas, photo);
      reject.onclick = () => decide(c, "rejected", tr, canvas, photo);
      const a = cell(""), b = cell("");
      a.append(confirm); b.append(reject);
      tr.append(cell(String(c.id)), cell(c.class), cell(c.score.toFixed(3)), cell(position, `location-${c.location}`), cell(radius), a, b);
      table.append(tr);
    }
    figure.append(caption, canvas, table);
    results.append(figure);
  }
  for (const id of ["export-csv", "export-geojson", "export-kml"]) $(id).disabled = false;
  summary();
}

function summary() {
  const counts = { confirmed: 0, rejected: 0, unreviewed: 0 };
  for (const c of state.candidates) counts[c.review_status]++;
  const perTile = state.tiles ? (state.inferMs / state.tiles).toFixed(0) : "-";
  $("summary").textContent = `${state.candidates.length} candidates in ${state.photos.length} photos ` +
    `(${counts.confirmed} confirmed, ${counts.rejected} rejected, ${counts.unreviewed} unreviewed); ` +
    `${state.tiles} tiles in ${(state.scoreMs / 1000).toFixed(1)} s, ${perTile} ms per tile in the model`;
}

// ---- exports ----
function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function exportAs(kind) {
  const fields = state.app.fields, rows = state.candidates;
  if (kind === "csv") download("candidates.csv", Ordnance.toCSV(fields, rows), "text/csv");
  if (kind === "geojson") download("candidates.geojson", Ordnance.toGeoJSON(fields, rows), "application/geo+json");
  if (kind === "kml") download("candidates.kml", Ordnance.toKML(fields, rows), "application/vnd.google-earth.kml+xml");
}

// ---- start ----
async function init() {
  if ("serviceWorker" in navigator && location.protocol.startsWith("http")) {
    // A rebuilt app is a new service worker: look for one on every open (when online) and, once it has taken over,
    // reload into it unless photos are open (their decisions live in this page until exported).
    const hadController = Boolean(navigator.serviceWorker.controller);
    navigator.serviceWorker.addEventListener("controllerchange", () => {
      if (!hadController) return;
      if (state.photos.length === 0 && !state.busy) location.reload();
      else status("a new version of the app is installed: it opens next time");
    });
    navigator.serviceWorker.register("sw.js")
      .then((registration) => registration.update().catch(() => undefined))
      .catch((error) => showError(`offline cache not installed: ${error.message}`));
  }
  $("photos").addEventListener("change", (event) => scorePhotos(event.target.files));
  $("model-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const buffer = await file.arrayBuffer();
    if (await loadModel(buffer, file.name)) await keepModel(buffer, file.name);
  });
  $("export-csv").onclick = () => exportAs("csv");
  $("export-geojson").onclick = () => exportAs("geojson");
  $("export-kml").onclick = () => exportAs("kml");
  try {
    state.app = await (await fetch("app.json")).json();
  } catch (error) {
    showError(`app.json: cannot be read (${error.message}); rebuild the app with 'ordnance tablet build'`);
    return;
  }
  if (state.app.model) {
    status("loading the model");
    const response = await fetch(state.app.model.file);
    await loadModel(await response.arrayBuffer(), state.app.model.source);
  } else {
    $("model-picker").hidden = false;
    const kept = await keptModel();
    if (kept && (await loadModel(kept.buffer, kept.name))) {
      status(`${$("status").textContent}; ${kept.name} kept on this device from an earlier open (open another to replace it)`);
    } else {
      status("open a model");
    }
  }
}

// A model opened from the device's storage is kept in the browser (a cache of its own, which app updates leave
// alone), so the next open, offline too, scores with it without asking again.
const KEPT = "ordnance-kept-model";
async function keepModel(buffer, name) {
  try {
    const cache = await caches.open(KEPT);
    await cache.put("model.onnx", new Response(buffer, { headers: { "X-Model-Name": encodeURIComponent(name) } }));
  } catch (error) {
    status(`${$("status").textContent}; the model is not kept on this device (${error.message})`);
  }
}
async function keptModel() {
  try {
    const response = await (await caches.open(KEPT)).match("model.onnx");
    if (!response) return null;
    return { buffer: await response.arrayBuffer(), name: decodeURIComponent(response.headers.get("X-Model-Name") || "model.onnx") };
  } catch (error) {
    return null;
  }
}

init();
