"""Accuracy benchmark: hazard-point recall and false alarms of exported models, as analysts would get them.

1. Synthetic: seeded survey mosaics (24 m x 24 m of ground, nodata collar) over three terrains at 0.5, 1
   and 2 cm GSD, generated on demand under data/ (never committed), scored with `ordnance score` (the
   scorer resamples to the model's GSD) and evaluated against their truth points with `ordnance evaluate`;
   fp32 and int8 files side by side (recall and scoring time).
2. Thermal: the frames of zones 7 and 9 of ../shared/data/thermal-landmines (the thermal recipe's
   validation zones), scored and evaluated in frame mode (COCO AP50, hazard-point recall, false alarms per
   frame).

    make bench-accuracy        # = .venv/bin/python experiments/accuracy/run.py
    .venv/bin/python experiments/accuracy/run.py --thermal-model experiments/models/thermal.onnx

Writes results.json and results.md here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "data"
THERMAL = REPO.parent / "shared" / "data" / "thermal-landmines"
BIOMES = ("meadow", "arid", "farmland")
GSDS_CM = (0.5, 1.0, 2.0)
GROUND_M = 24.0
SEED = 7100  # mosaic seeds 7100+: never used for training tiles


def synthetic_mosaics(workers: int) -> list[dict]:
    from ordnance.datasets.synth.writers import write_mosaic

    mosaics = []
    for b, biome in enumerate(BIOMES):
        for g, gsd_cm in enumerate(GSDS_CM):
            side = round(GROUND_M / (gsd_cm / 100))
            path = DATA / f"{biome}_{gsd_cm:g}cm.tif"
            seed = SEED + 10 * b + g
            if not path.exists():
                print(f"[{time.strftime('%H:%M:%S')}] generating {path.name} ({side}² px)", flush=True)
                size = {"width_px": side, "height_px": side, "gsd_m": gsd_cm / 100}
                write_mosaic(path, **size, seed=seed, biome=biome, workers=workers)
            mosaics.append({"biome": biome, "gsd_cm": gsd_cm, "side_px": side, "seed": seed, "path": path})
    return mosaics


def score_and_evaluate(mosaic: dict, model: Path, tag: str) -> dict:
    from ordnance.inference.evaluate import evaluate_mosaic
    from ordnance.inference.scoring import ScoringJob, score

    out = DATA / f"scored_{tag}_{mosaic['path'].stem}"
    start = time.perf_counter()
    result = score(ScoringJob(inputs=(str(mosaic["path"]),), model=model, out_dir=out, progress=False, resume=False))
    seconds = time.perf_counter() - start
    truth = mosaic["path"].with_name(f"{mosaic['path'].stem}_truth.gpkg")
    report = evaluate_mosaic(result.outputs["gpkg"], truth, manifest=result.outputs["manifest"])
    overall = report["overall"]
    return {
        "biome": mosaic["biome"],
        "gsd_cm": mosaic["gsd_cm"],
        "model": tag,
        "items": overall["n_truth"],
        "recall": overall["recall"],
        "precision": overall["precision"],
        "false_alarms_per_ha": overall["false_alarms_per_ha"],
        "recall_at_10_fa_per_ha": overall["recall_at_10_fa_per_ha"],
        "ap": overall["ap"],
        "per_class_recall": {k: v["recall"] for k, v in report["per_class"].items() if v["n_truth"]},
        "recall_near_seams": report.get("seams", {}).get("recall_near_seams"),
        "recall_interior": report.get("seams", {}).get("recall_interior"),
        "area_ha": report["area_ha"],
        "score_s": seconds,
    }


def thermal(model: Path) -> dict:
    from ordnance.inference.frames import FrameSettings, evaluate_frames
    from ordnance.inference.scoring import ScoringJob, score
    from ordnance.inference.session import open_session

    frames = sorted(str(p) for p in THERMAL.glob("*/images/*") if "Zone_7_" in p.name or "Zone_9_" in p.name)
    out = DATA / "scored_thermal"
    start = time.perf_counter()
    score(
        ScoringJob(
            inputs=tuple(frames),
            model=model,
            out_dir=out,
            progress=False,
            resume=False,
            score_threshold=0.01,
            formats=("csv",),
        )
    )
    seconds = time.perf_counter() - start
    threshold = open_session(model).card.score_threshold
    every = evaluate_frames(out / "candidates.csv", THERMAL / "data.yaml", FrameSettings(floor_px=8.0))
    at_op = evaluate_frames(
        out / "candidates.csv", THERMAL / "data.yaml", FrameSettings(floor_px=8.0, score_threshold=threshold)
    )
    return {
        "frames": every["frames"],
        "items": every["overall"]["n_truth"],
        "ap50": every["coco"]["ap50"],
        "ap50_95": every["coco"]["ap50_95"],
        "hazard_ap": every["overall"]["ap"],
        "recall_at_0.1_fa_per_frame": every["overall"]["recall_at_0.1_fa_per_image"],
        "recall_at_1_fa_per_frame": every["overall"]["recall_at_1_fa_per_image"],
        "threshold": threshold,
        "recall": at_op["overall"]["recall"],
        "precision": at_op["overall"]["precision"],
        "false_alarms_per_frame": at_op["overall"]["false_alarms_per_image"],
        "score_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "experiments/models/synthetic.onnx")
    parser.add_argument("--int8-model", type=Path, default=REPO / "experiments/models/synthetic.int8.onnx")
    parser.add_argument("--thermal-model", type=Path, default=REPO / "experiments/models/thermal.onnx")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Mosaic generation processes.")
    args = parser.parse_args()
    if not args.model.exists():
        raise SystemExit(f"{args.model}: model does not exist; export one first (README: train, then ordnance export)")
    DATA.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "models": {"fp32": args.model.name, "int8": args.int8_model.name if args.int8_model.exists() else None},
        "synthetic": [],
    }
    mosaics = synthetic_mosaics(args.workers)
    results["generate_s"] = time.perf_counter() - start
    for mosaic in mosaics:
        for tag, model in (("fp32", args.model), ("int8", args.int8_model)):
            if model.exists():
                print(f"[{time.strftime('%H:%M:%S')}] scoring {mosaic['path'].name} with {tag}", flush=True)
                results["synthetic"].append(score_and_evaluate(mosaic, model, tag))
    if args.thermal_model.exists() and THERMAL.exists():
        print(f"[{time.strftime('%H:%M:%S')}] thermal zones 7 and 9", flush=True)
        results["thermal"] = thermal(args.thermal_model) | {"model": args.thermal_model.name}
    results["wall_s"] = time.perf_counter() - start
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    (HERE / "results.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict) -> str:
    lines = [
        f"{r['machine']}; {r['date']}; fp32 `{r['models']['fp32']}`, int8 `{r['models']['int8']}`; "
        f"{r['wall_s'] / 60:.1f} min in all.",
        "",
        f"Synthetic surveys, {GROUND_M:g} m x {GROUND_M:g} m each (nodata collar outside the flown footprint). "
        "Recall and false alarms at the model's operating point; AP over its candidates.",
        "",
        "| terrain | GSD (cm) | model | items | recall | precision | FA/ha | recall @ 10 FA/ha | AP | recall ap/at/uxo "
        "| scoring (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in r["synthetic"]:
        per = s["per_class_recall"]
        classes = "/".join(f"{per[c]:.2f}" if c in per else "-" for c in ("ap_mine", "at_mine", "uxo"))
        lines.append(
            f"| {s['biome']} | {s['gsd_cm']:g} | {s['model']} | {s['items']} | {s['recall']:.3f} | "
            f"{s['precision']:.3f} | {s['false_alarms_per_ha']:.0f} | {s['recall_at_10_fa_per_ha']:.3f} | "
            f"{s['ap']:.3f} | {classes} | {s['score_s']:.0f} |"
        )
    for tag in ("fp32", "int8"):
        rows = [s for s in r["synthetic"] if s["model"] == tag]
        if rows:
            found = sum(s["recall"] * s["items"] for s in rows)
            items = sum(s["items"] for s in rows)
            fa = sum(s["false_alarms_per_ha"] * s["area_ha"] for s in rows) / sum(s["area_ha"] for s in rows)
            lines.append(
                f"| **all** | | {tag} | {items} | **{found / items:.3f}** | | {fa:.0f} | | | | "
                f"{sum(s['score_s'] for s in rows):.0f} |"
            )
    if "thermal" in r:
        t = r["thermal"]
        lines += [
            "",
            f"Thermal frames, zones 7 and 9 (`{t['model']}`): {t['frames']} frames, {t['items']} items.",
            "",
            "| AP50 (COCO) | AP50-95 | hazard AP | recall @ 0.1 FA/frame | recall @ 1 FA/frame | threshold | recall | "
            "precision | FA/frame | scoring (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {t['ap50']:.3f} | {t['ap50_95']:.3f} | {t['hazard_ap']:.3f} | {t['recall_at_0.1_fa_per_frame']:.3f} | "
            f"{t['recall_at_1_fa_per_frame']:.3f} | {t['threshold']:.3f} | {t['recall']:.3f} | {t['precision']:.3f} | "
            f"{t['false_alarms_per_frame']:.2f} | {t['score_s']:.0f} |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
