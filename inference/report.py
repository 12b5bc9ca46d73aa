"""A survey report for a scoring run: one self-contained HTML file (and a PDF printed by headless Chromium).

It holds an overview map (the mosaic, the scanned coverage, proposed hazard areas and candidates), counts per
class and review status, hectares scanned, the hazard areas, the model card and settings, and the evaluation
when one is given. Every image is inline (data: URIs) and no script runs, so the file opens offline and prints
the same anywhere. Conditions a reader must not miss (a threshold never validated, a GPU run that fell back to
the CPU, an input whose GSD differs from the model's) are shown in a box at the top.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from ordnance.inference.errors import InputError
from ordnance.inference.raster import open_raster, source_of
from ordnance.inference.review import STATUSES, read_candidates
from ordnance.inference.writers import atomic_path, read_manifest
from rasterio.enums import Resampling

CLASS_COLOUR = {"ap_mine": "#e31a1c", "at_mine": "#6a3d9a", "uxo": "#ff7f00"}
AREA_COLOUR = {"CHA": "#e31a1c", "SHA": "#ff7f00"}
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f2f2f2; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.warn { border: 2px solid #b30000; background: #fff0f0; padding: 8px 12px; margin: 12px 0; }
.map { border: 1px solid #999; width: 100%; height: auto; background: #eee; }
.legend span { display: inline-block; margin-right: 14px; } .sw { width: 12px; height: 12px; display: inline-block;
  vertical-align: middle; margin-right: 4px; border: 1px solid #333; }
@media print { body { margin: 0; max-width: none; } .map { max-height: 60vh; } }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _read_layer(gpkg: Path, layer: str):
    if layer not in {str(name) for name, _ in pyogrio.list_layers(gpkg)}:
        return [], {}
    meta, _, geometry, fields = pyogrio.raw.read(gpkg, layer=layer)
    return [shapely.from_wkb(g) for g in geometry], dict(zip(meta["fields"], fields))


def _warnings(manifest: dict, card: dict) -> list[str]:
    out = []
    if card.get("operating_point") != "validated":
        out.append(
            f"The model's operating threshold ({card.get('score_threshold')}) was never validated on held-out data: "
            "recall at this threshold is unknown."
        )
    settings = manifest.get("settings", {})
    if settings.get("operating_point") == "user":
        out.append(
            f"The score threshold was set by the user ({settings.get('score_threshold')}), not the model's "
            f"validated operating point ({card.get('score_threshold')})."
        )
    if settings.get("device") in ("cuda", "tensorrt") and settings.get("execution_provider") == "CPUExecutionProvider":
        out.append(f"A {settings['device']} run fell back to the CPU.")
    for entry in manifest.get("inputs", []):
        check = str(entry.get("gsd_check", ""))
        if (check and "resampled" in check) or entry.get("crs") is None:
            out.append(f"{source_of(entry['path']).name}: {check or 'not georeferenced'}")
    return out


def _map_svg(manifest: dict, gpkg: Path, threshold: float, width_px: int = 960, max_points: int = 5000):
    """(SVG of the run in its CRS: mosaics, coverage, areas, and the candidates at or above ``threshold`` or
    reviewed, the strongest ``max_points`` of them; a note on what is not drawn)."""
    coverage, _ = _read_layer(gpkg, "coverage")
    areas, area_fields = _read_layer(gpkg, "hazard_areas")
    meta, _, table = read_candidates(gpkg)
    if meta["crs"] is None or not coverage:
        return "", "The run is not georeferenced: no map."
    extent = shapely.union_all([*coverage, *areas]).bounds
    x0, y0, x1, y1 = extent
    pad = 0.03 * max(x1 - x0, y1 - y0, 1e-9)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    scale = width_px / (x1 - x0)
    height_px = max(1, round((y1 - y0) * scale))

    def px(x, y):
        return (np.asarray(x) - x0) * scale, (y1 - np.asarray(y)) * scale

    parts, notes = [], []
    for entry in manifest["inputs"]:
        path = source_of(entry["path"])
        try:
            with open_raster(path) as src:
                t = src.transform
                if t.b != 0 or t.d != 0:
                    notes.append(f"{path.name}: rotated mosaic, drawn without its image.")
                    continue
                bx0, by0, bx1, by1 = src.bounds
                w = max(1, round((bx1 - bx0) * scale))
                h = max(1, round((by1 - by0) * scale))
                bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
                data = src.read(bands, out_shape=(3, h, w), resampling=Resampling.average)
        except InputError:  # moved, deleted or unreachable since the run
            notes.append(f"{path.name} is no longer at {path}: the map shows no image.")
            continue
        data = data.astype(np.float64)
        hi = np.percentile(data, 99.5) if data.size else 1.0
        rgb = np.clip(data / max(hi, 1e-9) * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        ix, iy = px(bx0, by1)
        parts.append(f'<image x="{ix:.1f}" y="{iy:.1f}" width="{w}" height="{h}" href="{_png_data_uri(rgb)}"/>')

    def path_d(geom) -> str:
        d = []
        for polygon in shapely.get_parts(geom):
            for ring in [polygon.exterior, *polygon.interiors]:
                xs, ys = px(*np.asarray(ring.coords).T[:2])
                d.append("M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys)) + " Z")
        return " ".join(d)

    for geom in coverage:
        parts.append(f'<path d="{path_d(geom)}" fill="none" stroke="#1f78b4" stroke-width="2"/>')
    for geom, status, name in zip(areas, area_fields.get("status", []), area_fields.get("id", [])):
        colour = AREA_COLOUR.get(str(status), "#ff7f00")
        parts.append(f'<path d="{path_d(geom)}" fill="{colour}" fill-opacity="0.25" stroke="{colour}" '
                     f'stroke-width="2"><title>{_e(name)} {_e(status)}</title></path>')  # fmt: skip
    score = np.asarray(table["score"], float)
    shown = (score >= threshold) | (np.asarray(table["review_status"]).astype(str) != "unreviewed")
    order = np.flatnonzero(shown)[np.argsort(-score[shown], kind="stable")][:max_points][::-1]  # strongest on top
    if len(order) < len(score):
        notes.append(f"The map shows {len(order)} of {len(score)} candidates: the reviewed ones and those scoring at "
                     f"least {threshold:.3f}, at most the {max_points} strongest.")  # fmt: skip
    xs, ys = px(np.asarray(table["x"], float), np.asarray(table["y"], float))
    for i in order:
        status = str(table["review_status"][i])
        if status == "rejected":
            parts.append(f'<circle cx="{xs[i]:.1f}" cy="{ys[i]:.1f}" r="2" fill="#999"/>')
            continue
        colour = CLASS_COLOUR.get(str(table["class"][i]), "#000")
        stroke = "#000" if status == "confirmed" else "#fff"
        radius = 2 + 3 * float(table["score"][i])
        parts.append(f'<circle cx="{xs[i]:.1f}" cy="{ys[i]:.1f}" r="{radius:.1f}" fill="{colour}" stroke="{stroke}">'
                     f"<title>{_e(table['id'][i])} {_e(table['class'][i])} {float(table['score'][i]):.3f}</title>"
                     "</circle>")  # fmt: skip
    svg = (f'<svg class="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width_px} {height_px}" '
           f'width="{width_px}" height="{height_px}">{"".join(parts)}</svg>')  # fmt: skip
    return svg, " ".join(notes)


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{_e(v)}</td>' if k in numeric else f"<td>{_e(v)}</td>" for k, v in
                         enumerate(row)) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _evaluation(path: Path) -> str:
    try:
        evaluation = json.loads(path.read_text())
        overall = evaluation["overall"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise InputError("not an evaluation.json written by 'ordnance evaluate'", path) from None
    rows = [["all", overall.get("n_truth"), overall.get("recall"), overall.get("false_alarms_per_ha"),
             overall.get("ap"), overall.get("recall_at_10_fa_per_ha")]]  # fmt: skip
    for name, values in sorted(evaluation.get("per_class", {}).items()):
        rows.append([name, values.get("n_truth"), values.get("recall"), values.get("false_alarms_per_ha"),
                     values.get("ap"), values.get("recall_at_10_fa_per_ha")])  # fmt: skip
    rows = [[r[0], *("" if v is None else (f"{v:.3f}" if isinstance(v, float) else v) for v in r[1:])] for r in rows]
    return (
        "<h2>Evaluation against truth</h2>"
        + _table(["class", "items", "recall", "false alarms per ha", "AP", "recall @ 10 FA/ha"], rows, {1, 2, 3, 4, 5})
        + f"<p class=sub>From {_e(path.name)}.</p>"
    )


def build_report(out_dir: str | Path, *, evaluation: str | Path | None = None, pdf: bool = False) -> list[Path]:
    """Write ``report.html`` (and ``report.pdf``) for the scoring run in ``out_dir``; returns the files."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.exists():
        raise InputError("no manifest.json here; run 'ordnance score' first", out_dir)
    manifest = read_manifest(manifest_path)
    card = manifest["model"]["card"]
    card = json.loads(card) if isinstance(card, str) else card
    gpkg = out_dir / "candidates.gpkg"
    _, _, table = read_candidates(gpkg)
    eval_html = _evaluation(Path(evaluation)) if evaluation else ""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if pdf and chromium is None:
        raise InputError("a PDF needs Chromium (apt install chromium); the HTML report needs nothing", out_dir)
    classes = list(card.get("class_names", sorted({str(c) for c in table["class"]})))
    cls, status = np.asarray(table["class"]).astype(str), np.asarray(table["review_status"]).astype(str)
    counts = [[c, *(int(((cls == c) & (status == s)).sum()) for s in STATUSES), int((cls == c).sum())]
              for c in classes]  # fmt: skip
    counts.append(["all", *(int((status == s).sum()) for s in STATUSES), len(cls)])
    _, area_fields = _read_layer(gpkg, "hazard_areas")
    areas_rows = [
        [area_fields["id"][k], area_fields["status"][k], f"{float(area_fields['area_ha'][k]):.3f}",
         *(int(area_fields[f"n_{c}"][k]) for c in ("ap_mine", "at_mine", "uxo")), int(area_fields["n_confirmed"][k]),
         int(area_fields["n_rejected"][k]), f"{float(area_fields['max_score'][k]):.3f}"]
        for k in range(len(area_fields.get("id", [])))
    ]  # fmt: skip
    svg, map_note = _map_svg(manifest, gpkg, float(card.get("score_threshold") or 0.0))
    inputs = [[source_of(i["path"]).name, f"{i['width']} x {i['height']}", f"{100 * float(i['gsd_m']):.2f}"
               if i.get("gsd_m") else "", f"{float(i.get('area_scanned_ha') or 0):.3f}", i.get("crs") or "none",
               str(i["sha256"])[:16] if i["sha256"] else "by URL"] for i in manifest["inputs"]]  # fmt: skip
    settings = manifest.get("settings", {})
    card_rows = [
        [k, card.get(k)]
        for k in (
            "model_name",
            "model_version",
            "weights_sha256",
            "gsd_m",
            "tile_size_px",
            "score_threshold",
            "operating_point",
            "quantization",
            "mlflow_run_id",
        )
    ]
    card_rows.append(["file sha256", manifest["model"].get("sha256")])
    warnings = _warnings(manifest, card)
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{_e(n)}</span>' for n, c in CLASS_COLOUR.items())
    legend += "".join(f'<span><i class="sw" style="background:{c};opacity:.5"></i>{n} proposal</span>'
                      for n, c in AREA_COLOUR.items())  # fmt: skip
    legend += '<span><i class="sw" style="background:none;border-color:#1f78b4"></i>coverage</span>'
    legend += '<span><i class="sw" style="background:#999"></i>rejected</span>'
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""
<h1>Survey report</h1>
<p class=sub>Scored {_e(manifest["started_utc"])} with {_e(card.get("model_name"))} {_e(card.get("model_version"))};
report written {_e(created)} by ordnance {_e(version("ordnance"))}. Candidates are what the model proposes for
review; they are not cleared or confirmed ground.</p>
{"".join(f'<div class="warn">{_e(w)}</div>' for w in warnings)}
<h2>Overview</h2>
{svg}<p class="legend">{legend}</p>{f"<p class=sub>{_e(map_note)}</p>" if map_note else ""}
<h2>Survey</h2>
{
        _table(
            ["hectares scanned", "candidates", "proposed areas", "area proposed (ha)"],
            [
                [
                    f"{float(manifest['area_scanned_ha']):.3f}",
                    len(cls),
                    len(areas_rows),
                    f"{sum(float(v) for v in area_fields.get('area_ha', [])):.3f}",
                ]
            ],
            {0, 1, 2, 3},
        )
    }
{_table(["mosaic", "pixels", "GSD (cm)", "ha", "CRS", "sha256"], inputs, {2, 3})}
<h2>Candidates by class and review status</h2>
{_table(["class", *STATUSES, "total"], counts, set(range(1, len(STATUSES) + 2)))}
<h2>Proposed hazard areas</h2>
{
        _table(
            ["id", "status", "ha", "AP mines", "AT mines", "UXO", "confirmed", "rejected inside", "max score"],
            areas_rows,
            {2, 3, 4, 5, 6, 7, 8},
        )
        if areas_rows
        else "<p>None derived (run 'ordnance areas').</p>"
    }
{eval_html}
<h2>Model card</h2>
{_table(["field", "value"], card_rows)}
<h2>Settings</h2>
{
        _table(
            ["setting", "value"],
            [[k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in sorted(settings.items())],
        )
    }
"""
    page = f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Survey report</title>' \
           f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; ' \
           f'style-src \'unsafe-inline\'"><style>{CSS}</style></head><body>{body}</body></html>'  # fmt: skip
    report = out_dir / "report.html"
    with atomic_path(report) as tmp:
        tmp.write_text(page, encoding="utf-8")
    written = [report]
    if pdf:
        written.append(print_pdf(report, chromium))
    return written


def print_pdf(report: Path, chromium: str) -> Path:
    """report.pdf beside ``report`` printed by headless Chromium (no network: the page has no external resource)."""
    final = report.with_suffix(".pdf")
    with atomic_path(final) as tmp, tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", f"--user-data-dir={profile}", "--no-pdf-header-footer",
             f"--print-to-pdf={tmp}", report.as_uri()],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if run.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            reason = (run.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise InputError(f"Chromium could not print the report ({reason})", report)
    return final
