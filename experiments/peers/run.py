"""Ours against the peer system a user would pick instead (Ultralytics YOLO11 + SAHI), in one run.

Each ``--ours TAG=MODEL.onnx`` is run as an analyst runs it (``ordnance score``), each ``--peer TAG=DIR`` (a folder
of experiments/peers/train.py: ``best.onnx``, ``train.json``) through SAHI (experiments/peers/score.py, in the
peers' environment ``.venv-peers``), on

- the accuracy benchmark's seeded survey mosaics (experiments/accuracy: three terrains at 0.5, 1 and 2 cm). Ours
  resamples each to its card's GSD itself; SAHI has no notion of GSD, so the peers get each mosaic resampled to
  1 cm, their training GSD, beforehand (bilinear, rasterio's WarpedVRT): the comparison is of the detectors, not
  of who reads the GSD. Every candidate down to a score of 0.02 is kept, matched to the truth by ``ordnance
  evaluate``'s rule, and pooled over the mosaics: recall and false alarms per ha at each model's own threshold
  (ours: the card's validated one; the peers: Ultralytics' default 0.25), and recall at equal false alarms per ha
  (at ours' pooled rate, and at 100 and 300 per ha), with AP over the pooled curve;
- the throughput mosaic (``--size`` px at 1 cm, as `make bench-throughput`): wall time, ha/h and peak RSS.

    .venv/bin/python experiments/peers/run.py --ours fast=experiments/detectors/data/fast/model_1024.int8.onnx \\
        --peer yolo11n=experiments/peers/data/yolo11n --peer yolo11s=experiments/peers/data/yolo11s

Ratios are ours over each peer, from this one run. Writes results.json, results.md and the table into
experiments/README.md (``--report`` rewrites them from results.json).
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

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "data"
BIN = Path(sys.executable).absolute().parent
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
sys.path.insert(0, str(HERE.parent))
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
CURVE_THRESHOLD = 0.02
PEER_THRESHOLD = 0.25  # Ultralytics' default confidence
BUDGETS = (100.0, 300.0)  # false alarms per ha at which recall is compared, beside ours' own rate


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pair(text: str) -> tuple[str, Path]:
    match = re.fullmatch(r"([A-Za-z0-9_-]+)=(.+)", text)
    if not match or not Path(match.group(2)).exists():
        raise argparse.ArgumentTypeError(f"{text!r}: expected TAG=PATH of an existing file or folder")
    return match.group(1), Path(match.group(2))


def at_1cm(mosaic: Path) -> Path:
    """The mosaic resampled to 1 cm (bilinear), written once beside the benchmark's data."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.vrt import WarpedVRT

    out = DATA / "mosaics_1cm" / mosaic.name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(mosaic) as src:
        left, top = src.bounds.left, src.bounds.top
        width = round((src.bounds.right - left) / 0.01)
        height = round((top - src.bounds.bottom) / 0.01)
        transform = from_origin(left, top, 0.01, 0.01)
        with WarpedVRT(src, crs=src.crs, transform=transform, width=width, height=height,
                       resampling=Resampling.bilinear) as vrt:  # fmt: skip
            profile = {**src.profile, "width": width, "height": height, "transform": transform, "tiled": True,
                       "blockxsize": 512, "blockysize": 512, "compress": "deflate"}  # fmt: skip
            tmp = out.with_suffix(".partial.tif")
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(vrt.read())
    os.replace(tmp, out)
    return out


def peer_score(mosaic: Path, model: Path, out: Path) -> dict:
    command = [str(PEERS_PYTHON), str(HERE / "score.py"), str(mosaic), str(model), str(out),
               "--threshold", str(CURVE_THRESHOLD)]  # fmt: skip
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def pooled(reports: list[dict], own_threshold: float) -> dict:
    """Recall, false alarms per ha and AP over every mosaic's candidates together."""
    from common import pooled_curve, recall_within

    scores, recall, fa = pooled_curve(reports)
    tp_c = recall * sum(r["overall"]["n_truth"] for r in reports)
    precision = tp_c / np.arange(1, len(recall) + 1)
    # AP: area under the precision envelope over recall (all-point interpolation)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    at = scores >= own_threshold
    return {
        "items": sum(r["overall"]["n_truth"] for r in reports),
        "area_ha": sum(r["area_ha"] for r in reports),
        "threshold": own_threshold,
        "recall": float(recall[at][-1]) if at.any() else 0.0,
        "false_alarms_per_ha": float(fa[at][-1]) if at.any() else 0.0,
        "ap": float(np.sum(np.diff(np.r_[0.0, recall]) * envelope)) if len(recall) else 0.0,
        "recall_at": {f"{b:g}": recall_within(recall, fa, b) for b in BUDGETS},
        "_curve": (recall, fa),
    }


def ours_training(run_id: str | None) -> dict:
    """Minutes and epochs of the training run named on our model's card, from the project's MLflow store (empty
    where the store does not hold it)."""
    if not run_id:
        return {}
    try:
        import mlflow
        from ordnance.training.tracking import default_tracking_uri

        cwd = os.getcwd()
        os.chdir(REPO)  # the default store lies under the repository
        try:
            client = mlflow.MlflowClient(tracking_uri=default_tracking_uri())
            run = client.get_run(run_id)
            epochs = client.get_metric_history(run_id, "epoch")
        finally:
            os.chdir(cwd)
    except Exception as error:  # no store here, or the run is not in it
        print(f"MLflow run {run_id} not read ({type(error).__name__}); its training time is left out", flush=True)
        return {}
    if not run.info.end_time:
        return {}
    return {"run": run_id, "minutes": (run.info.end_time - run.info.start_time) / 60000,
            "epochs": int(max(m.value for m in epochs)) + 1 if epochs else 0}  # fmt: skip


def run(args) -> dict:
    from common import tiled_mosaic
    from ordnance.inference.card import read_card
    from ordnance.inference.evaluate import evaluate_mosaic
    from ordnance.inference.scoring import ScoringJob, score

    if args.peer and not PEERS_PYTHON.exists():
        sys.exit(f"{PEERS_PYTHON}: missing; make peers-setup first")
    DATA.mkdir(parents=True, exist_ok=True)
    detectors = _load("detectors_run", HERE.parent / "detectors" / "run.py")
    acc = detectors.accuracy_module(DATA / "accuracy")
    mosaics = acc.synthetic_mosaics(args.workers)
    big = tiled_mosaic(DATA / f"tiled_{args.size}.tif", args.size)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "mosaic_px": args.size,
        "systems": [],
    }
    areas = {}
    for tag, model in args.ours:
        print(f"[{time.strftime('%H:%M:%S')}] ours {tag}", flush=True)
        card = read_card(model)
        rows = []
        for m in mosaics:
            out = acc.DATA / f"scored_{tag}_{m['path'].stem}"
            score(ScoringJob(inputs=(str(m["path"]),), model=model, out_dir=out, progress=False, resume=False,
                             score_threshold=CURVE_THRESHOLD))  # fmt: skip
            truth = m["path"].with_name(f"{m['path'].stem}_truth.gpkg")
            report = evaluate_mosaic(out / "candidates.gpkg", truth, manifest=out / "manifest.json")
            areas[m["path"].stem] = report["area_ha"]
            rows.append(report)
        entry = {"tag": tag, "kind": "ours", "model": str(model), "detector": card.model_name,
                 "train": ours_training(card.mlflow_run_id), "accuracy": pooled(rows, card.score_threshold),
                 "throughput": detectors.score_mosaic(big, model, DATA / f"scored_{tag}_big", args.size)}  # fmt: skip
        results["systems"].append(entry)
    for tag, folder in args.peer:
        print(f"[{time.strftime('%H:%M:%S')}] peer {tag}", flush=True)
        model = folder / "best.onnx"
        rows = []
        for m in mosaics:
            found = DATA / f"{tag}_{m['path'].stem}.gpkg"
            peer_score(at_1cm(m["path"]), model, found)
            truth = m["path"].with_name(f"{m['path'].stem}_truth.gpkg")
            rows.append(evaluate_mosaic(found, truth, area_ha=areas[m["path"].stem]))  # the area ours scanned
        timing = peer_score(big, model, DATA / f"{tag}_big.gpkg")
        timing["ha_per_h"] = args.size**2 * 1e-8 / (timing["seconds"] / 3600)
        train = json.loads((folder / "train.json").read_text()) if (folder / "train.json").exists() else {}
        results["systems"].append({"tag": tag, "kind": "peer", "model": str(model), "detector": train.get("model", tag),
                                   "train": train, "accuracy": pooled(rows, PEER_THRESHOLD),
                                   "throughput": timing})  # fmt: skip
    ours_rate = next(s for s in results["systems"] if s["kind"] == "ours")["accuracy"]["false_alarms_per_ha"]
    from common import recall_within

    for s in results["systems"]:
        recall, fa = s["accuracy"].pop("_curve")
        s["accuracy"]["recall_at_ours_rate"] = recall_within(recall, fa, ours_rate)
    results["ours_rate"] = ours_rate
    save(results)
    return results


def save(results: dict) -> None:
    tmp = HERE / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, HERE / "results.json")


def markdown(r: dict) -> str:
    ours = next(s for s in r["systems"] if s["kind"] == "ours")
    budgets = [f"{b:g}" for b in BUDGETS]
    lines = [
        f"{r['machine']}; {r['date']}. Accuracy pooled over the seeded survey mosaics of experiments/accuracy "
        f"({ours['accuracy']['items']} items, {ours['accuracy']['area_ha']:.2f} ha); throughput on the "
        f"{r['mosaic_px']:,}² px mosaic at 1 cm. Ratios: `{ours['tag']}` over each row.",
        "",
        "| system | detector | training | threshold | recall | FA/ha | recall @ "
        f"{r['ours_rate']:.0f} FA/ha (ours' rate) | "
        + " | ".join(f"recall @ {b} FA/ha" for b in budgets)
        + " | AP | ha/h | peak RSS (MB) | ours: recall x at ours' rate | ours: speed x |",
        "| --- | --- | --- | --- | --- | --- | --- | "
        + " | ".join("---" for _ in budgets)
        + " | --- | --- | --- | --- | --- |",
    ]
    for s in r["systems"]:
        a, t = s["accuracy"], s["throughput"]
        train = s.get("train", {})
        trained = f"{train['minutes']:.0f} min, {train['epochs']} epochs" if train else "its recipe"
        mine, theirs = ours["accuracy"]["recall_at_ours_rate"], a["recall_at_ours_rate"]
        recall_x = f"{mine / theirs:.2f}" if theirs else "no ratio: finds none"
        speed_x = ours["throughput"]["ha_per_h"] / t["ha_per_h"]
        lines.append(
            f"| {s['tag']} ({'ours' if s['kind'] == 'ours' else 'SAHI'}) | `{s['detector']}` | {trained} | "
            f"{a['threshold']:.3f} | {a['recall']:.3f} | {a['false_alarms_per_ha']:.0f} | "
            f"{a['recall_at_ours_rate']:.3f} | "
            + " | ".join(f"{a['recall_at'][b]:.3f}" for b in budgets)
            + f" | {a['ap']:.3f} | {t['ha_per_h']:.1f} | {t['peak_rss_mb']:.0f} | {recall_x} | {speed_x:.2f} |"
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
    parser.add_argument("--ours", type=_pair, action="append", default=[], help="TAG=MODEL.onnx, the first compared")
    parser.add_argument("--peer", type=_pair, action="append", default=[], help="TAG=FOLDER of peers/train.py")
    parser.add_argument("--size", type=int, default=20000, help="throughput mosaic side, px at 1 cm")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from results.json")
    args = parser.parse_args(argv)
    if args.report:
        report(json.loads((HERE / "results.json").read_text()))
        return 0
    if not args.ours:
        parser.error("give --ours TAG=MODEL.onnx")
    report(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
