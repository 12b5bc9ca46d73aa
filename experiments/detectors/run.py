"""Trained detectors side by side: what each costs per hectare and what it finds, in one run.

Each ``--model TAG=CHECKPOINT:TILE`` (a checkpoint of the synthetic recipe, 1 cm, and the tile size it is exported
at; the first is the baseline every ratio is taken against) is

1. exported through the parity gate (``ordnance export --tile-size TILE``, parity and int8 calibration on the
   synthetic recipe's tiles, 64 parity tiles; the int8 file beside it where its gate passes; the card's overlap is
   the export's default, a quarter tile up to 128 px);
2. run end to end with ``ordnance score`` over the throughput mosaic (``--size`` px at 1 cm, as `make
   bench-throughput`), int8 and float32 one after the other on the otherwise idle machine: wall time, ha/h, peak
   RSS (``/usr/bin/time``), windows run;
3. scored and evaluated on the accuracy benchmark's seeded survey mosaics (experiments/accuracy: three terrains
   at 0.5, 1 and 2 cm): pooled recall and false alarms per ha at each file's own validated threshold, the pooled
   recall each file reaches within the baseline file's false alarms per ha (read off its candidates above its own
   threshold), and the mean AP over the mosaics.

    .venv/bin/python experiments/detectors/run.py \\
        --model default=runs/1/<run>/checkpoints/best.ckpt:512 --model fast=runs/1/<run>/checkpoints/best.ckpt:1024

Writes results.json and results.md here and the table into experiments/README.md (``--report`` rewrites them from
results.json). Exports and scored runs go under data/ (not committed); a model already exported is reused, and a
finished measurement is kept in results.json, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "data"
BIN = Path(sys.executable).absolute().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "throughput"))
BEGIN, END = "<!-- detectors:begin -->", "<!-- detectors:end -->"
FILES = (("int8", ".int8.onnx"), ("fp32", ".onnx"))
# Parity and int8 calibration on the recipe's own tiles, 64 parity tiles: with the export's default 16 the int8
# gate's recall is read off a few dozen items, where one item is several points.
EXPORT_ARGS = ["--calibration", str(REPO / "configs" / "synthetic.yaml"), "--parity-data",
               str(REPO / "configs" / "synthetic.yaml"), "--parity-tiles", "64"]  # fmt: skip


def parse_model(text: str) -> dict:
    match = re.fullmatch(r"([A-Za-z0-9_-]+)=(.+):(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TAG=CHECKPOINT:TILE")
    tag, ckpt, tile = match.group(1), Path(match.group(2)), int(match.group(3))
    if not ckpt.is_file():
        raise argparse.ArgumentTypeError(f"{ckpt}: no such checkpoint")
    return {"tag": tag, "checkpoint": str(ckpt), "tile": tile}


def export(model: dict) -> dict[str, Path]:
    onnx = DATA / model["tag"] / f"model_{model['tile']}.onnx"
    onnx.parent.mkdir(parents=True, exist_ok=True)
    if not onnx.exists():
        command = [str(BIN / "ordnance"), "export", model["checkpoint"], "-o", str(onnx), "--tile-size",
                   str(model["tile"]), "--no-register", *EXPORT_ARGS]  # fmt: skip
        subprocess.run(command, check=True)
    return {kind: onnx.with_suffix(suffix) if kind == "int8" else onnx for kind, suffix in FILES}


def score_mosaic(mosaic: Path, model_file: Path, out: Path, size_px: int) -> dict:
    """``ordnance score`` of the whole mosaic as a user runs it, under /usr/bin/time for its peak RSS."""
    command = ["/usr/bin/time", "-f", "maxrss_kb=%M", str(BIN / "ordnance"), "score", str(mosaic), "--model",
               str(model_file), "-o", str(out), "--no-progress", "--no-resume", "--no-review",
               "--format", "gpkg"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, check=True, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    rss = re.findall(r"maxrss_kb=(\d+)", done.stderr)
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "seconds": seconds,
        "ha_per_h": size_px**2 * 0.01**2 / 1e4 / (seconds / 3600),
        "peak_rss_mb": int(rss[-1]) / 1024 if rss else None,
        "tiles": manifest["tiles"],
        "timings": manifest["timings"],
        "candidates": manifest.get("candidates"),
    }


def accuracy_module(data: Path = DATA / "accuracy"):
    """experiments/accuracy/run.py, its mosaics and scored runs kept under ``data``."""
    spec = importlib.util.spec_from_file_location("accuracy_run", HERE.parent / "accuracy" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.DATA = data
    module.DATA.mkdir(parents=True, exist_ok=True)
    return module


def accuracy(module, mosaics: list[dict], model_file: Path, tag: str) -> dict:
    rows = [module.score_and_evaluate(m, model_file, tag) for m in mosaics]
    items = sum(r["items"] for r in rows)
    area = sum(r["area_ha"] for r in rows)
    return {
        "items": items,
        "found": round(sum(r["recall"] * r["items"] for r in rows)),
        "recall": sum(r["recall"] * r["items"] for r in rows) / items,
        "false_alarms_per_ha": sum(r["false_alarms_per_ha"] * r["area_ha"] for r in rows) / area,
        "mean_ap": sum(r["ap"] for r in rows) / len(rows),
        "rows": rows,
    }


def run(args) -> dict:
    from common import pooled_curve, recall_within, tiled_mosaic
    from flops import graph_gflops
    from ordnance.inference.card import read_card

    DATA.mkdir(parents=True, exist_ok=True)
    path = HERE / "results.json"
    results = json.loads(path.read_text()) if path.exists() and not args.fresh else {}
    if results.get("models") and [m["tag"] for m in results["models"]] != [m["tag"] for m in args.model]:
        results = {}  # another set of models: start over
    results.update({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "mosaic_px": args.size,
        "gsd_m": 0.01,
    })  # fmt: skip
    previous = {m["tag"]: m for m in results.get("models", [])}
    results["models"] = [{**m, **previous.get(m["tag"], {})} for m in args.model]
    mosaic = tiled_mosaic(DATA / f"tiled_{args.size}.tif", args.size)
    acc = accuracy_module()
    mosaics = acc.synthetic_mosaics(args.workers)
    for model in results["models"]:
        files = export(model)
        card = read_card(files["fp32"])
        model["detector"] = card.model_name
        model["overlap_px"] = card.overlap_px
        model["computed_share"] = (model["tile"] / (model["tile"] - card.overlap_px)) ** 2
        model["gflops_per_tile"] = graph_gflops(files["fp32"])["gflops_per_tile"]
        model["gflops_per_mp"] = model["gflops_per_tile"] / (model["tile"] ** 2 / 1e6)
        for kind, file in files.items():
            if not file.exists():
                model.setdefault("refused", []).append(kind)
                continue
            key = f"score_{kind}"
            if key not in model:
                print(f"[{time.strftime('%H:%M:%S')}] {model['tag']} {kind}: scoring {mosaic.name}", flush=True)
                model[key] = score_mosaic(mosaic, file, DATA / model["tag"] / f"scored_{kind}", args.size)
                save(results)
            key = f"accuracy_{kind}"
            if key not in model:
                print(f"[{time.strftime('%H:%M:%S')}] {model['tag']} {kind}: accuracy benchmark", flush=True)
                model[key] = accuracy(acc, mosaics, file, f"{model['tag']}_{kind}")
                save(results)
    # Recall at the baseline's false-alarm rate: each file's pooled curve (its candidates down to its own threshold)
    # read at the rate the baseline file of the same kind reaches at its operating point.
    for kind, _ in FILES:
        base = results["models"][0].get(f"accuracy_{kind}")
        for model in results["models"]:
            a = model.get(f"accuracy_{kind}")
            if base and a:
                _, recall, fa = pooled_curve(evaluations(acc, mosaics, f"{model['tag']}_{kind}"))
                a["recall_at_baseline_fa"] = recall_within(recall, fa, base["false_alarms_per_ha"])
    save(results)
    return results


def evaluations(acc, mosaics: list[dict], tag: str) -> list[dict]:
    """The accuracy benchmark's scored runs of ``tag`` evaluated again, with their recall curves."""
    from ordnance.inference.evaluate import evaluate_mosaic

    reports = []
    for m in mosaics:
        out = acc.DATA / f"scored_{tag}_{m['path'].stem}"
        truth = m["path"].with_name(f"{m['path'].stem}_truth.gpkg")
        reports.append(evaluate_mosaic(out / "candidates.gpkg", truth, manifest=out / "manifest.json"))
    return reports


def save(results: dict) -> None:
    tmp = HERE / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, HERE / "results.json")


def markdown(r: dict) -> str:
    base = r["models"][0]
    lines = [
        f"{r['machine']}; {r['date']}. Throughput: `ordnance score` end to end on the {r['mosaic_px']:,}² px "
        f"mosaic at 1 cm ({r['mosaic_px'] ** 2 * 1e-8:.0f} ha), each file alone on the machine. Accuracy: the "
        "seeded survey mosaics of experiments/accuracy, pooled, at each file's own validated threshold. Ratios "
        f"against `{base['tag']}` in the same run.",
        "",
        "| model | detector | tile / overlap (px) | GFLOPs per MP | file | ha/h | speed x | peak RSS (MB) | pooled "
        f"recall | found | FA/ha | recall at `{base['tag']}`'s FA/ha | mean AP |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in r["models"]:
        for kind, _ in FILES:
            s, a = m.get(f"score_{kind}"), m.get(f"accuracy_{kind}")
            if s is None and a is None:
                if kind in m.get("refused", []):
                    lines.append(f"| {m['tag']} | `{m.get('detector', '')}` | | | {kind} | refused by the export gate "
                                 "| | | | | | |")  # fmt: skip
                continue
            b = base.get(f"score_{kind}")
            speed = f"{s['ha_per_h'] / b['ha_per_h']:.2f}" if s and b else ""
            found = (
                f"{a['recall']:.3f} | {a['found']} of {a['items']} | {a['false_alarms_per_ha']:.0f} | "
                f"{a.get('recall_at_baseline_fa', float('nan')):.3f} | {a['mean_ap']:.3f}"
                if a
                else " | | | "
            )
            lines.append(
                f"| {m['tag']} | `{m['detector']}` | {m['tile']} / {m['overlap_px']} | {m['gflops_per_mp']:.0f} | "
                f"{kind} | {s['ha_per_h']:.1f} | {speed} | {s['peak_rss_mb']:.0f} | {found} |"
            )
    return "\n".join(lines) + "\n"


def report(results: dict) -> None:
    from common import write_readme_block

    text = markdown(results)
    (HERE / "results.md").write_text(text)
    write_readme_block(BEGIN, END, text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=parse_model, action="append", default=[],
                        help="TAG=CHECKPOINT:TILE; the first is the baseline")  # fmt: skip
    parser.add_argument("--size", type=int, default=20000, help="throughput mosaic side, px at 1 cm")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="mosaic generation processes")
    parser.add_argument("--fresh", action="store_true", help="measure again what results.json already holds")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from results.json")
    args = parser.parse_args(argv)
    if args.report:
        report(json.loads((HERE / "results.json").read_text()))
        return 0
    if len(args.model) < 1:
        parser.error("give at least one --model TAG=CHECKPOINT:TILE")
    report(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
