"""Learning from review on real imagery: how many analyst decisions it takes to cut false alarms on a flight the
loop never saw.

The loop flight is the PFM-1 valid flight (Phan4_210414_F14) laid into a georeferenced mosaic; the judge is the
test-flight mosaic (Phan4_200316_F02), which neither the model nor the loop ever trained on. Steps:

1. The current RGB model (``--parent-ckpt`` and its exported ``--parent-onnx``) scores the loop mosaic at
   ``--review-threshold`` with ``ordnance score``.
2. A simulated reviewer answers from the loop flight's truth: a candidate within the evaluation tolerance of a
   true item is confirmed, any other rejected. It decides the first N candidates in the page's order, by score
   or most informative first (``ordnance.inference.review.informative_order``); the rest stay unreviewed.
   The decisions go in through ``ordnance review import``.
3. ``ordnance train fit --config configs/finetune_review.yaml`` on that run, the same number of steps for every
   N, without validation (the card's threshold is then a fallback; the figures here need none).
4. ``ordnance export`` through the parity gate, ``ordnance score`` on the judge mosaic at a low threshold, and
   the recall / false-alarm curve against its truth.

Rows: the parent as it is, the control (the same fine-tune with no decisions: replay only), and each order x N.

The same-ground arm (``--arm pfm1_same``) answers the case the workflow serves: a survey reviewed in part, and
the rest of the same survey (same ground, camera, light and day) scored again. The test-flight mosaic is cut at a
tile-row boundary into a northern and a southern half with about half the items each; each half in turn is the
loop and the other the judge (two folds). Its models serve this experiment only; the PFM-1 ablation's test-flight
figures come from models that never saw a test-flight pixel.

The training-flights arm (``--arm pfm1_train``) is hard-negative mining through the same loop: the parent scores
the mosaic of the four training flights (whose truth the recipe already trains on), the simulated reviewer decides
its candidates (confirmed items; rejected look-alikes, most of them dead leaves on Phan4_200316_F03), the
fine-tune learns from them, and the test flight judges. No pixel of the valid or test flights is trained on.

The synthetic arm (``--arm synthetic``) runs the same loop with the synthetic recipe's model at 1 cm on two
seeded synthetic survey mosaics (``ordnance synth mosaic``: the loop and, on other ground, the judge), fine-tuned
with configs/finetune_review_synthetic.yaml; its parent ONNX is exported first when missing.

    .venv/bin/python experiments/review_loop/run.py --parent-ckpt runs/2/<run>/checkpoints/best-*.ckpt \
        --parent-onnx experiments/models/rgb.onnx [--n 50 100 200 500] [--orders score informative]
    .venv/bin/python experiments/review_loop/run.py --arm synthetic --parent-ckpt runs/1/<run>/checkpoints/best-*.ckpt \
        --parent-onnx experiments/review_loop/data/synthetic.onnx
    .venv/bin/python experiments/review_loop/report.py

results.json (results_synthetic.json) keeps each finished row (the experiment resumes after a stop).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments" / "pfm1"))
from common import HERE as PFM1  # noqa: E402

BIN = Path(sys.executable).absolute().parent
DATA = HERE / "data"
ARMS = {
    "pfm1": {"results": HERE / "results.json", "config": REPO / "configs" / "finetune_review.yaml",
             "parity": REPO / "configs" / "pfm1.yaml", "floor_m": 0.05},
    "pfm1_same": {"results": HERE / "results_same_ground.json", "config": REPO / "configs" / "finetune_review.yaml",
                  "parity": REPO / "configs" / "pfm1.yaml", "floor_m": 0.05},
    "pfm1_train": {"results": HERE / "results_train_flights.json", "config": REPO / "configs" / "finetune_review.yaml",
                   "parity": REPO / "configs" / "pfm1.yaml", "floor_m": 0.05},
    "synthetic": {"results": HERE / "results_synthetic.json",
                  "config": REPO / "configs" / "finetune_review_synthetic.yaml",
                  "parity": REPO / "configs" / "finetune_review_synthetic.yaml", "floor_m": 0.05},
}  # fmt: skip
RESULTS = ARMS["pfm1"]["results"]
CONFIG = ARMS["pfm1"]["config"]
FLOOR_M = 0.05  # hit tolerance: half the item's size, at least 5 cm (a PFM-1 is 12 cm long)
SYNTH_SURVEY = {"loop": 101, "judge": 202}  # seeds: two surveys on different ground
SYNTH_SURVEY_PX = 8000  # 80 m square at 1 cm (0.64 ha, about 40 items)
JUDGE_THRESHOLD = 0.02  # candidates kept on the judge mosaic for the curve
FA_LEVELS = (250.0, 500.0, 1000.0)  # recall reported at these false alarms per ha
RECALL_LEVELS = (0.6, 0.7, 0.8)  # false alarms per ha reported at these recalls


def _run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def _save(results: dict) -> None:
    from ordnance.inference.writers import write_json

    write_json(RESULTS, results)


def mosaic(split: str) -> tuple[Path, Path]:
    """The flight's mosaic and truth (experiments/pfm1/mosaic.py), built once."""
    tif = PFM1 / "data" / f"pfm1_{split}.tif"
    if not tif.exists():
        _run([sys.executable, str(PFM1 / "mosaic.py"), "--split", split])
    return tif, PFM1 / "data" / f"pfm1_{split}_truth.gpkg"


def halves(tif: Path, truth: Path) -> dict[str, tuple[Path, Path]]:
    """The mosaic cut at the tile-row boundary that leaves the items nearest to half and half: north and south
    GeoTIFFs (with the mosaic's mask) and their truth points, built once."""
    import pyogrio.raw
    import rasterio
    from ordnance.datasets.truth import write_truth_points
    from ordnance.inference.writers import atomic_path
    from rasterio.windows import Window

    out = {side: (DATA / f"same_{side}.tif", DATA / f"same_{side}_truth.gpkg") for side in ("north", "south")}
    if all(t.exists() and g.exists() for t, g in out.values()):
        return out
    info = json.loads(tif.with_suffix(".json").read_text())
    tile_h = max(p["height"] for p in info["placement"])
    meta, _, _, fields = pyogrio.raw.read(truth)
    f = dict(zip(meta["fields"], fields))
    rows, cols = np.asarray(f["row"], float), np.asarray(f["col"], float)
    with rasterio.open(tif) as src:
        bounds = np.arange(tile_h, src.height, tile_h)
        cut = int(bounds[np.argmin([abs((rows < b).sum() - len(rows) / 2) for b in bounds])])
        windows = {"north": Window(0, 0, src.width, cut), "south": Window(0, cut, src.width, src.height - cut)}
        for side, window in windows.items():
            path, _ = out[side]
            profile = src.profile | {"height": int(window.height), "transform": src.window_transform(window)}
            with atomic_path(path) as tmp:
                with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tmp, "w", **profile) as dst:
                    dst.write(src.read(window=window))
                    dst.write_mask(src.dataset_mask(window=window))
            keep = (rows >= window.row_off) & (rows < window.row_off + window.height)
            write_truth_points(
                path.with_suffix(""),
                cols=cols[keep],
                rows=rows[keep] - window.row_off,
                classes=np.asarray(f["class"])[keep],
                sizes_m=np.asarray(f["size_m"])[keep],
                transform=profile["transform"],
                epsg=int(src.crs.to_epsg()),
            )
    return out


def synthetic_mosaic(role: str) -> tuple[Path, Path]:
    """A seeded synthetic survey and its truth points (``ordnance synth mosaic``), built once."""
    tif = DATA / f"synth_{role}.tif"
    if not tif.exists():
        _run([str(BIN / "ordnance"), "synth", "mosaic", str(tif), "--width", str(SYNTH_SURVEY_PX), "--seed",
              str(SYNTH_SURVEY[role])])  # fmt: skip
    return tif, DATA / f"synth_{role}_truth.gpkg"


def score(tif: Path, model: Path, out: Path, threshold: float) -> Path:
    _run([str(BIN / "ordnance"), "score", str(tif), "--model", str(model), "-o", str(out), "--no-progress",
          "--no-resume", "--no-review", "--format", "gpkg", "--score-threshold", str(threshold)])  # fmt: skip
    return out


def curve(scored: Path, truth: Path) -> dict:
    """Recall at fixed false alarms per ha, false alarms per ha at fixed recall, and AP on the judge mosaic."""
    from ordnance.inference.evaluate import EvaluationSettings, evaluate_mosaic

    report = evaluate_mosaic(
        scored / "candidates.gpkg", truth, settings=EvaluationSettings(floor_m=FLOOR_M, fa_per_ha=FA_LEVELS)
    )
    overall, area = report["overall"], report["area_ha"]
    _, recall, precision = (np.asarray(a) for a in report["pr_curve"])
    ranks = np.arange(1, len(recall) + 1)
    false_alarms = ranks - np.round(precision * ranks)
    out = {"ap": overall["ap"], "n_truth": overall["n_truth"], "area_ha": area}
    for level in FA_LEVELS:
        out[f"recall_at_{level:g}_fa_per_ha"] = overall[f"recall_at_{level:g}_fa_per_ha"]
    for level in RECALL_LEVELS:
        reached = recall >= level - 1e-9
        out[f"fa_per_ha_at_recall_{level:g}"] = float(false_alarms[reached].min() / area) if reached.any() else None
    return out


def simulated_decisions(scored: Path, truth: Path, order: str, n: int, out: Path) -> dict:
    """Decide the first ``n`` candidates of ``scored`` in the page's ``order`` from the truth; write them as the
    review page exports them (GeoJSON with the run id and coordinates)."""
    import pyogrio.raw
    import shapely
    from ordnance.inference.review import informative_order, read_candidates, run_id
    from ordnance.inference.writers import read_manifest

    manifest = read_manifest(scored / "manifest.json")
    _, _, table = read_candidates(scored / "candidates.gpkg")
    scores = np.asarray(table["score"], float)
    if order == "score":
        ranked = np.argsort(-scores, kind="stable")
    else:
        ranked = informative_order(scores, json.loads(manifest["model"]["card"])["score_threshold"])
    meta, _, wkb, fields = pyogrio.raw.read(truth)
    points = shapely.from_wkb(wkb)
    t_xy = np.c_[shapely.get_x(points), shapely.get_y(points)]
    sizes = np.asarray(dict(zip(meta["fields"], fields))["size_m"], float)
    tolerance = np.maximum(FLOOR_M, 0.5 * sizes)
    xy = np.c_[np.asarray(table["x"], float), np.asarray(table["y"], float)]
    d = np.linalg.norm(xy[:, None] - t_xy[None], axis=2)
    on_item = (d <= tolerance[None]).any(1)
    chosen = ranked[:n]
    run = run_id(manifest)
    features = [
        {"type": "Feature", "geometry": None, "properties": {
            "id": int(table["id"][i]), "review_status": "confirmed" if on_item[i] else "rejected", "run": run,
            "x": float(xy[i, 0]), "y": float(xy[i, 1])}}
        for i in chosen
    ]  # fmt: skip
    out.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return {"decided": len(chosen), "confirmed": int(on_item[chosen].sum()), "rejected": int((~on_item[chosen]).sum()),
            "candidates": len(scores), "items_among_candidates": int(on_item.sum())}  # fmt: skip


def fine_tune(parent: Path, run: Path | None, root: Path, steps: int, config: Path = CONFIG) -> tuple[Path, float]:
    """The finetune_review recipe for ``steps`` steps, no validation; (last checkpoint, minutes)."""
    args = [str(BIN / "ordnance"), "train", "fit", "--config", str(config), "--model.init_checkpoint", str(parent),
            "--trainer.default_root_dir", str(root), "--trainer.max_steps", str(steps), "--trainer.max_epochs", "1000",
            "--trainer.max_time", "null", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    if run is not None:
        args += ["--data.reviewed", json.dumps([{"run": str(run)}])]
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    _run(args)
    return next(root.glob("**/last.ckpt")), (time.perf_counter() - start) / 60


def export(ckpt: Path, out: Path, recipe: Path = REPO / "configs" / "pfm1.yaml") -> None:
    """The float32 file only: the loop scores float32."""
    _run([str(BIN / "ordnance"), "export", str(ckpt), "-o", str(out), "--parity-data", str(recipe),
          "--parity-tiles", "16", "--no-register", "--no-int8"])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-ckpt", type=Path, required=True)
    parser.add_argument("--parent-onnx", type=Path, required=True)
    parser.add_argument("--n", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--orders", nargs="+", default=["score", "informative"], choices=["score", "informative"])
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps of every row (batch 8)")
    parser.add_argument("--review-threshold", type=float, default=0.1)
    parser.add_argument("--arm", choices=list(ARMS), default="pfm1", help="real flights, or synthetic surveys")
    args = parser.parse_args(argv)
    global RESULTS
    arm = ARMS[args.arm]
    RESULTS = arm["results"]
    os.chdir(REPO)  # recipes name their data relative to the repository root
    DATA.mkdir(parents=True, exist_ok=True)
    if args.arm == "pfm1":
        folds = [(mosaic("valid"), mosaic("test"), "")]
    elif args.arm == "pfm1_train":
        folds = [(mosaic("train"), mosaic("test"), "train_")]
    elif args.arm == "pfm1_same":
        half = halves(*mosaic("test"))
        folds = [(half["north"], half["south"], "same_n_"), (half["south"], half["north"], "same_s_")]
    else:
        folds = [(synthetic_mosaic("loop"), synthetic_mosaic("judge"), "synth_")]
        if not args.parent_onnx.exists():
            export(args.parent_ckpt, args.parent_onnx, arm["parity"])
    results = _load()
    if len(folds) == 1:
        run_fold(args, arm, folds[0], results, results)
    else:
        results.setdefault("folds", {})
        for fold in folds:
            name = fold[2].rstrip("_")
            run_fold(args, arm, fold, results, results["folds"].setdefault(name, {}))
    return 0


def run_fold(args, arm: dict, fold: tuple, results: dict, out: dict) -> None:
    """One loop flight and one judge: the parent on the judge, then the control and each order x N; rows go into
    ``out`` (``results`` is what is saved)."""
    (loop_tif, loop_truth), (judge_tif, judge_truth), prefix = fold
    out["setup"] = {"arm": args.arm, "parent_ckpt": str(args.parent_ckpt), "parent_onnx": str(args.parent_onnx),
                    "steps": args.steps, "review_threshold": args.review_threshold, "loop": loop_tif.name,
                    "judge": judge_tif.name, "floor_m": FLOOR_M}  # fmt: skip
    scored = DATA / f"{prefix}loop_scored"
    if not (scored / "manifest.json").exists():
        score(loop_tif, args.parent_onnx, scored, args.review_threshold)
    if "parent" not in out:
        out["parent"] = {"judge": curve(score(judge_tif, args.parent_onnx, DATA / f"{prefix}judge_parent",
                                              JUDGE_THRESHOLD), judge_truth)}  # fmt: skip
        _save(results)
    rows = [("control", 0)] + [(o, n) for o in args.orders for n in sorted(args.n)]
    for order, n in rows:
        name = f"{order}_{n}"
        work = f"{prefix}{name}"
        if name in out:
            continue
        print(f"== {name}", flush=True)
        row: dict = {"order": order, "n": n}
        run = None
        if n:
            run = DATA / f"loop_{work}"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir()
            for f in ("manifest.json", "candidates.gpkg"):
                shutil.copy2(scored / f, run / f)
            row["review"] = simulated_decisions(scored, loop_truth, order, n, DATA / f"decisions_{work}.geojson")
            _run([str(BIN / "ordnance"), "review", "import", str(run), str(DATA / f"decisions_{work}.geojson")])
        ckpt, minutes = fine_tune(args.parent_ckpt, run, DATA / f"train_{work}", args.steps, arm["config"])
        model = DATA / f"{work}.onnx"
        export(ckpt, model, arm["parity"])
        row["train_minutes"] = minutes
        row["judge"] = curve(score(judge_tif, model, DATA / f"judge_{work}", JUDGE_THRESHOLD), judge_truth)
        out[name] = row
        _save(results)


if __name__ == "__main__":
    sys.exit(main())
