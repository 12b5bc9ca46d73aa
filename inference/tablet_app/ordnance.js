// What `ordnance score` does to a photo, for the tablet: the model card read from the ONNX file itself, the
// tile grid, per-window filtering, the seam merge, the camera pose and ground placement, and the output tables.
// Each function mirrors the Python module named beside it; the tests compare the two on the same photos.
/* exported Ordnance */
"use strict";

const Ordnance = (() => {
  // ---- the model card, from the ONNX file's metadata_props (ordnance/inference/card.py) ----
  function readVarint(bytes, pos) {
    let value = 0, scale = 1, byte;
    do {
      if (pos >= bytes.length) throw new Error("truncated protobuf");
      byte = bytes[pos++];
      value += (byte & 0x7f) * scale;
      scale *= 128;
    } while (byte & 0x80);
    return [value, pos];
  }

  function fields(bytes, start, end, visit) {
    let pos = start;
    while (pos < end) {
      let key;
      [key, pos] = readVarint(bytes, pos);
      const field = Math.floor(key / 8), wire = key & 7;
      if (wire === 0) { [, pos] = readVarint(bytes, pos); }
      else if (wire === 1) { pos += 8; }
      else if (wire === 5) { pos += 4; }
      else if (wire === 2) {
        let length;
        [length, pos] = readVarint(bytes, pos);
        if (pos + length > end) throw new Error("truncated protobuf");
        visit(field, pos, pos + length);
        pos += length;
      } else { throw new Error(`unsupported protobuf wire type ${wire}`); }
    }
  }

  /** The ONNX ModelProto's metadata_props (field 14) as {key: value}; throws on a file that is not one. */
  function onnxMetadata(buffer) {
    const bytes = new Uint8Array(buffer), text = new TextDecoder();
    const props = {};
    let sawGraph = false;
    fields(bytes, 0, bytes.length, (field, start, end) => {
      if (field === 7) sawGraph = true;
      if (field !== 14) return;
      let key = null, value = "";
      fields(bytes, start, end, (f, s, e) => {
        if (f === 1) key = text.decode(bytes.subarray(s, e));
        if (f === 2) value = text.decode(bytes.subarray(s, e));
      });
      if (key !== null) props[key] = value;
    });
    if (!sawGraph) throw new Error("not an ONNX model (no graph)");
    return props;
  }

  /** The card in an ONNX file, checked against the contract in app.json; throws an Error with a one-line reason. */
  function readCard(buffer, contract) {
    let metadata;
    try { metadata = onnxMetadata(buffer); } catch (error) { throw new Error(`not a loadable ONNX model (${error.message})`); }
    if (!(contract.card_key in metadata)) throw new Error("ONNX file has no ordnance model card; export it with 'ordnance export'");
    let card;
    try { card = JSON.parse(metadata[contract.card_key]); } catch (error) { throw new Error(`model card is not valid JSON (${error.message})`); }
    if (card === null || typeof card !== "object" || Array.isArray(card)) throw new Error("model card is not a JSON object");
    if (card.schema_version !== contract.schema_version) throw new Error(`model card schema_version ${JSON.stringify(card.schema_version)} is not supported`);
    if (!Array.isArray(card.class_names) || !card.class_names.length) throw new Error("model card class_names must be a list of names");
    if (!(Number.isInteger(card.tile_size_px) && card.tile_size_px > 0)) throw new Error("model card tile_size_px must be a positive integer");
    if (!(card.overlap_px >= 0 && card.overlap_px < card.tile_size_px)) throw new Error("model card overlap_px must be in [0, tile_size_px)");
    if (!(card.score_threshold > 0 && card.score_threshold <= 1)) throw new Error("model card score_threshold must be in (0, 1]");
    if (JSON.stringify(card.band_order) !== "[1,2,3]") throw new Error(`model card band_order ${JSON.stringify(card.band_order)}: the tablet takes RGB photos`);
    return card;
  }

  /** The graph's inputs and outputs against the contract (ordnance/inference/session.py, open_session). */
  function checkGraph(inputs, outputs, inputMeta, card, contract) {
    if (JSON.stringify(inputs) !== JSON.stringify([contract.input]) ||
        JSON.stringify([...outputs].sort()) !== JSON.stringify([...contract.outputs].sort())) {
      throw new Error(`graph has inputs ${JSON.stringify(inputs)} and outputs ${JSON.stringify(outputs)}, not the ordnance contract`);
    }
    if (inputMeta && inputMeta.type && inputMeta.type !== "uint8") throw new Error(`graph input is ${inputMeta.type}, not the contract's uint8`);
    const shape = inputMeta && inputMeta.shape;
    if (shape) {
      const size = card.tile_size_px;
      const bad = shape.length !== 4 || shape[1] !== 3 || shape.slice(2).some((d) => typeof d === "number" && d !== size);
      if (bad) throw new Error(`graph input shape ${JSON.stringify(shape)} does not take the card's (N, 3, ${size}, ${size}) tiles`);
    }
  }

  /** Python's round(): halves to the even neighbour, as the scorer computes window sizes. */
  function pyRound(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // ---- the tile grid (ordnance/inference/grid.py) ----
  function offsets(length, tile, stride) {
    if (length <= tile) return [0];
    const out = [];
    for (let x = 0; x < length - tile; x += stride) out.push(x);
    out.push(length - tile);
    return out;
  }

  function cores(offs, tile, length) {
    const edges = [0];
    for (let i = 1; i < offs.length; i++) edges.push((offs[i] + Math.min(offs[i - 1] + tile, length)) / 2);
    edges.push(length);
    return edges.slice(0, -1).map((e, i) => [e, edges[i + 1]]);
  }

  function tileGrid(width, height, tile, overlap) {
    if (!(overlap >= 0 && overlap < tile)) throw new Error(`overlap must be in [0, ${tile})`);
    const stride = tile - overlap;
    const xs = offsets(width, tile, stride), ys = offsets(height, tile, stride);
    const xc = cores(xs, tile, width), yc = cores(ys, tile, height);
    const tiles = [];
    ys.forEach((y, j) => xs.forEach((x, i) => tiles.push({
      index: tiles.length, col: x, row: y, width: Math.min(tile, width), height: Math.min(tile, height),
      core: [xc[i][0], yc[j][0], xc[i][1], yc[j][1]],
    })));
    return tiles;
  }

  // ---- one window's detections in photo pixels (ordnance/inference/scoring.py, _detections) ----
  // rows: [x0, y0, x1, y1, score, label, in_core]; `valid(c, r)` says whether a tile pixel holds image data.
  function windowDetections(tile, boxes, scores, labels, k, threshold, size, factor, valid) {
    const rows = [];
    for (let i = 0; i < k; i++) {
      const score = scores[i];
      if (!(score >= threshold)) continue;
      const b = [boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]];
      const cx = Math.min(Math.max(Math.trunc((b[0] + b[2]) / 2), 0), size - 1);
      const cy = Math.min(Math.max(Math.trunc((b[1] + b[3]) / 2), 0), size - 1);
      if (!valid(cx, cy)) continue;
      const box = [b[0] * factor + tile.col, b[1] * factor + tile.row, b[2] * factor + tile.col, b[3] * factor + tile.row];
      const mx = (box[0] + box[2]) / 2, my = (box[1] + box[3]) / 2;
      const [x0, y0, x1, y1] = tile.core;
      rows.push([...box, score, Number(labels[i]), mx >= x0 && mx < x1 && my >= y0 && my < y1 ? 1 : 0]);
    }
    return rows;
  }

  // ---- the seam merge (ordnance/inference/merge.py, merge_detections with the scorer's settings) ----
  function sameObject(a, b, iosMin = 0.5, centreFrac = 0.5) {
    const iw = Math.max(Math.min(a[2], b[2]) - Math.max(a[0], b[0]), 0);
    const ih = Math.max(Math.min(a[3], b[3]) - Math.max(a[1], b[1]), 0);
    const areaA = (a[2] - a[0]) * (a[3] - a[1]), areaB = (b[2] - b[0]) * (b[3] - b[1]);
    const ios = (iw * ih) / Math.max(Math.min(areaA, areaB), 1e-9);
    const distance = Math.hypot((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2, (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2);
    const sideA = Math.max(a[2] - a[0], a[3] - a[1]), sideB = Math.max(b[2] - b[0], b[3] - b[1]);
    return ios >= iosMin || distance <= centreFrac * Math.min(sideA, sideB);
  }

  function intersects(a, b) {
    return a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3];
  }

  /** rows: [tile, x0, y0, x1, y1, score, label, in_core]; returns merged [x0, y0, x1, y1, score, label, in_core,
   * also_seen_as bit mask], best first, as merge_records does for one file. */
  function mergeRows(rows) {
    const table = [...rows].sort((a, b) => a[0] - b[0] || b[5] - a[5] || a[1] - b[1] || a[2] - b[2]);
    const n = table.length;
    const order = [...Array(n).keys()].sort((i, j) => table[j][7] - table[i][7] || table[j][5] - table[i][5] || i - j);
    const rank = new Array(n);
    order.forEach((index, r) => { rank[index] = r; });
    const alive = new Array(n).fill(true), into = new Array(n).fill(-1);
    for (let r = 0; r < n; r++) {
      const index = order[r];
      const box = table[index].slice(1, 5);
      let best = -1;
      for (let q = 0; q < r; q++) {
        const other = order[q];
        if (!alive[other]) continue;
        const obox = table[other].slice(1, 5);
        if (intersects(box, obox) && sameObject(box, obox)) { best = other; break; }
      }
      if (best >= 0) { alive[index] = false; into[index] = best; }
    }
    const others = new Array(n).fill(0);
    for (let i = 0; i < n; i++) {
      if (into[i] >= 0 && table[i][6] !== table[into[i]][6]) others[into[i]] |= 1 << table[i][6];
    }
    return order.filter((i) => alive[i]).map((i) => [...table[i].slice(1, 8), others[i]]);
  }

  // ---- the camera pose and ground placement (ordnance/inference/camera.py) ----
  const DEFAULT_GNSS_ERROR_M = 5.0, NADIR_TOLERANCE_DEG = 5.0, ATTITUDE_ERROR_DEG = 2.0, HEIGHT_ERROR = 0.05;
  const FULL_FRAME_DIAGONAL_MM = Math.hypot(36, 24);
  const UNIT_MM = { 2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001 };

  function num(value) {
    if (value === undefined || value === null) return null;
    const v = Array.isArray(value) ? value[0] : Number(value);
    return Number.isFinite(v) ? v : null;
  }

  /** The pose from exifr's output (raw values: `translateValues: false`, with `xmp: true`); null without GNSS. */
  function readPose(tags) {
    if (!tags || !Number.isFinite(tags.latitude) || !Number.isFinite(tags.longitude)) return null;
    let gpsAlt = num(tags.GPSAltitude);
    if (gpsAlt !== null && num(tags.GPSAltitudeRef) === 1) gpsAlt = -gpsAlt;
    let pitchMm = null;
    const resolution = num(tags.FocalPlaneXResolution);
    const unit = UNIT_MM[num(tags.FocalPlaneResolutionUnit) ?? 2];
    if (resolution && resolution > 0 && unit) pitchMm = unit / resolution;
    let heading = num(tags.GimbalYawDegree);
    if (heading === null && String(tags.GPSImgDirectionRef || "").trim() === "T") heading = num(tags.GPSImgDirection);
    const error = num(tags.GPSHPositioningError);
    return {
      lon: tags.longitude, lat: tags.latitude,
      gnss_error_m: error && error > 0 ? error : DEFAULT_GNSS_ERROR_M,
      relative_altitude_m: num(tags.RelativeAltitude), gps_altitude_m: gpsAlt,
      focal_mm: num(tags.FocalLength), pixel_pitch_mm: pitchMm, focal_35mm: num(tags.FocalLengthIn35mmFilm),
      heading_deg: heading, pitch_deg: num(tags.GimbalPitchDegree),
    };
  }

  function frameGeometry(pose, width, height, groundAltitude = null) {
    const missing = [];
    let h = null, hNote = "";
    if (pose.relative_altitude_m !== null) { h = pose.relative_altitude_m; hNote = "height from XMP RelativeAltitude (above the take-off point)"; }
    else if (pose.gps_altitude_m !== null && groundAltitude !== null) { h = pose.gps_altitude_m - groundAltitude; hNote = `height from GPSAltitude minus ground altitude ${groundAltitude} m`; }
    else missing.push("height above ground (XMP RelativeAltitude, or GPSAltitude with a ground altitude)");
    if (h !== null && !(h > 0)) { missing.push(`a positive height above ground (got ${h.toFixed(1)} m)`); h = null; }
    let pitch = null, cNote = "";
    if (pose.focal_mm && pose.pixel_pitch_mm) { pitch = pose.pixel_pitch_mm / pose.focal_mm; cNote = `focal ${pose.focal_mm} mm, pixel pitch ${(pose.pixel_pitch_mm * 1000).toFixed(2)} um`; }
    else if (pose.focal_35mm) { pitch = FULL_FRAME_DIAGONAL_MM / Math.hypot(width, height) / pose.focal_35mm; cNote = `35 mm equivalent focal ${pose.focal_35mm} mm`; }
    else missing.push("focal length and sensor (FocalLength with FocalPlaneXResolution, or FocalLengthIn35mmFilm)");
    const gsd = h !== null && pitch !== null ? h * pitch : null;
    if (pose.heading_deg === null) missing.push("heading (XMP GimbalYawDegree, or GPSImgDirection to true north)");
    if (pose.pitch_deg === null) missing.push("gimbal pitch (XMP GimbalPitchDegree)");
    else if (Math.abs(pose.pitch_deg + 90) > NADIR_TOLERANCE_DEG) missing.push(`a nadir camera (gimbal pitch ${pose.pitch_deg} deg, not -90 +- ${NADIR_TOLERANCE_DEG})`);
    if (missing.length) {
      let note = "at the camera's GNSS position; missing: " + missing.join("; ");
      if (gsd !== null) note += `; GSD ${(gsd * 100).toFixed(2)} cm/px (${hNote}, ${cNote})`;
      return { gsd_m: gsd, projected: false, height_m: h, note };
    }
    return { gsd_m: gsd, projected: true, height_m: h, note: `projected to the ground: GSD ${(gsd * 100).toFixed(2)} cm/px (${hNote}, ${cNote}), heading ${pose.heading_deg} deg` };
  }

  /** WGS 84 position `east`, `north` metres from (lon, lat): the ellipsoid's radii of curvature at lat, which over
   * the few hundred metres of a photo stays within millimetres of the geodesic (pyproj's Geod.fwd). */
  function lonlatOffset(lon, lat, east, north) {
    const a = 6378137.0, f = 1 / 298.257223563, e2 = f * (2 - f);
    const phi = (lat * Math.PI) / 180, s = Math.sin(phi);
    const w = Math.sqrt(1 - e2 * s * s);
    const meridian = (a * (1 - e2)) / (w * w * w), normal = a / w;
    const lat2 = lat + ((north / meridian) * 180) / Math.PI;
    const phiMid = ((lat + lat2) / 2) * Math.PI / 180;
    const normalMid = a / Math.sqrt(1 - e2 * Math.sin(phiMid) ** 2);
    return [lon + ((east / (normalMid * Math.cos(phiMid))) * 180) / Math.PI, lat2];
  }

  function place(pose, geometry, cx, cy, width, height) {
    const dx = cx - width / 2, dy = cy - height / 2;
    if (geometry.gsd_m === null) return { lon: pose.lon, lat: pose.lat, location: "frame_gps", radius: NaN };
    const distance = Math.hypot(dx, dy) * geometry.gsd_m;
    if (!geometry.projected) return { lon: pose.lon, lat: pose.lat, location: "frame_gps", radius: pose.gnss_error_m + distance };
    const yaw = (pose.heading_deg * Math.PI) / 180;
    const east = geometry.gsd_m * (dx * Math.cos(yaw) - dy * Math.sin(yaw));
    const north = geometry.gsd_m * (-dx * Math.sin(yaw) - dy * Math.cos(yaw));
    const [lon, lat] = lonlatOffset(pose.lon, pose.lat, east, north);
    const attitude = (ATTITUDE_ERROR_DEG * Math.PI) / 180;
    const radius = pose.gnss_error_m + geometry.height_m * Math.tan(attitude) + distance * (attitude + HEIGHT_ERROR);
    return { lon, lat, location: "ground", radius };
  }

  // ---- GeoTIFF coordinates (ordnance/inference/georef.py, for the CRSs the tablet knows) ----
  /** A GeoTIFF's CRS from its GeoKeys: {epsg, proj4, geographic}; throws with the reason when the tablet cannot
   * place its pixels (the scorer can: `ordnance score`). */
  function geotiffCrs(geoKeys) {
    const keys = geoKeys || {};
    const projected = keys.ProjectedCSTypeGeoKey, geographic = keys.GeographicTypeGeoKey;
    if (projected && projected !== 32767) {
      const south = projected >= 32701 && projected <= 32760, north = projected >= 32601 && projected <= 32660;
      if (!south && !north) throw new Error(`EPSG:${projected} is not a CRS the tablet knows (UTM on WGS 84, or WGS 84 degrees); score it with ordnance score`);
      const unit = keys.ProjLinearUnitsGeoKey;
      if (unit && unit !== 9001) throw new Error(`linear unit ${unit} is not the metre`);
      const zone = projected % 100;
      return { epsg: projected, geographic: false, proj4: `+proj=utm +zone=${zone}${south ? " +south" : ""} +datum=WGS84 +units=m +no_defs` };
    }
    if (geographic === 4326) return { epsg: 4326, geographic: true, proj4: null };
    if (geographic || projected) throw new Error(`EPSG:${projected || geographic} is not a CRS the tablet knows (UTM on WGS 84, or WGS 84 degrees); score it with ordnance score`);
    throw new Error("has no CRS (GeoKeys); the tablet places only georeferenced GeoTIFFs");
  }

  /** Ground metres per pixel of a north-up grid: the spacing in a UTM CRS; in degrees, the two sides' size on the
   * ellipsoid at the centre, averaged (as gsd_m does for geographic CRSs). */
  function gridGsd(crs, resX, resY, lat) {
    if (!crs.geographic) return Math.abs(resX);
    const a = 6378137.0, f = 1 / 298.257223563, e2 = f * (2 - f);
    const phi = (lat * Math.PI) / 180, w = Math.sqrt(1 - e2 * Math.sin(phi) ** 2);
    const across = ((Math.abs(resX) * Math.PI) / 180) * (a / w) * Math.cos(phi);
    const along = ((Math.abs(resY) * Math.PI) / 180) * ((a * (1 - e2)) / w ** 3);
    return (across + along) / 2;
  }

  // ---- output tables (ordnance/inference/writers.py: the same fields in the same order) ----
  function csvCell(value) {
    if (value === null || value === undefined || (typeof value === "number" && Number.isNaN(value))) return "";
    const text = String(value);
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function toCSV(fields, rows) {
    return [fields.join(","), ...rows.map((r) => fields.map((f) => csvCell(r[f])).join(","))].join("\r\n") + "\r\n";
  }

  function jsonValue(value) {
    return typeof value === "number" && !Number.isFinite(value) ? null : value;
  }

  function toGeoJSON(fields, rows) {
    const features = rows.filter((r) => Number.isFinite(r.lon) && Number.isFinite(r.lat)).map((r) => ({
      type: "Feature",
      properties: Object.fromEntries(fields.map((f) => [f, jsonValue(r[f])])),
      geometry: { type: "Point", coordinates: [r.lon, r.lat] },
    }));
    return JSON.stringify({ type: "FeatureCollection", name: "candidates",
      crs: { type: "name", properties: { name: "urn:ogc:def:crs:OGC:1.3:CRS84" } }, features });
  }

  function xml(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  function toKML(fields, rows) {
    const marks = rows.filter((r) => Number.isFinite(r.lon) && Number.isFinite(r.lat)).map((r) => {
      const data = fields.map((f) => `<SimpleData name="${xml(f)}">${xml(jsonValue(r[f]) ?? "")}</SimpleData>`).join("");
      return `<Placemark><name>${xml(r.class)}</name><description>${xml(r.score)}</description>` +
        `<ExtendedData><SchemaData schemaUrl="#candidates">${data}</SchemaData></ExtendedData>` +
        `<Point><coordinates>${r.lon},${r.lat}</coordinates></Point></Placemark>`;
    });
    const schema = fields.map((f) => `<SimpleField name="${xml(f)}" type="string"></SimpleField>`).join("");
    return `<?xml version="1.0" encoding="utf-8" ?>\n<kml xmlns="http://www.opengis.net/kml/2.2"><Document id="root_doc">` +
      `<Schema name="candidates" id="candidates">${schema}</Schema><Folder><name>candidates</name>${marks.join("")}</Folder></Document></kml>\n`;
  }

  return {
    onnxMetadata, readCard, checkGraph, pyRound, tileGrid, windowDetections, mergeRows, readPose, frameGeometry, place,
    lonlatOffset, geotiffCrs, gridGsd, toCSV, toGeoJSON, toKML,
  };
})();

if (typeof module !== "undefined") module.exports = Ordnance;
