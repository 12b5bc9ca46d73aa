"""The main job on built-in defaults: data -> training -> ONNX -> scored survey -> evaluation.

``python -m ordnance.training.demo`` (``make demo``). Each step prints what it did and where its output is.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run(out: Path, *, config: Path, mosaic_px: int, train_args: list[str], seed: int = 101) -> dict:
    """Run every step; returns the summary."""
    from ordnance.datasets.synth.writers import write_mosaic
    from ordnance.inference.evaluate import EvaluationSettings, evaluate_mosaic, markdown_table
    from ordnance.inference.scoring import ScoringJob, score
    from ordnance.training.cli import main as train
    from ordnance.training.export import ExportSettings, export_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = _step("1/5 synthetic training tiles and a separate survey mosaic with truth, 1 cm GSD")
    survey = write_mosaic(out / "survey.tif", width_px=mosaic_px, height_px=mosaic_px, seed=seed, gsd_m=0.01)
    timings["mosaic_s"] = time.perf_counter() - start

    start = _step("2/5 training the default detector (tiles are generated first when missing)")
    cli = train(
        [
            "fit",
            "--config",
            str(config),
            "--data.data_yaml",
            str(out / "tiles" / "data.yaml"),
            "--trainer.default_root_dir",
            str(out / "runs"),
            *train_args,
        ]
    )
    timings["train_s"] = time.perf_counter() - start
    checkpoint = Path(
        cli.trainer.checkpoint_callback.best_model_path or cli.trainer.checkpoint_callback.last_model_path
    )

    start = _step("3/5 export to ONNX through the parity gate")
    report = export_checkpoint(checkpoint, out / "model.onnx", ExportSettings(parity_tiles=8))
    timings["export_s"] = time.perf_counter() - start
    print(
        f"parity: {report['fp32']['matched_share']:.4f} matched, max score diff {report['fp32']['max_score_diff']:.1e}"
    )

    start = _step("4/5 scoring the survey mosaic")
    result = score(ScoringJob(inputs=(str(survey["mosaic"]),), model=out / "model.onnx", out_dir=out / "scored"))
    timings["score_s"] = time.perf_counter() - start

    start = _step("5/5 evaluation against the truth")
    evaluation = evaluate_mosaic(
        result.outputs["gpkg"], survey["truth_gpkg"], settings=EvaluationSettings(), manifest=result.outputs["manifest"]
    )
    (out / "evaluation.md").write_text(markdown_table(evaluation))
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    timings["evaluate_s"] = time.perf_counter() - start
    overall = evaluation["overall"]
    hours = result.manifest["timings"]["total_s"] / 3600
    summary = {
        "items_found": int(round(overall["recall"] * overall["n_truth"])),
        "items_present": overall["n_truth"],
        "false_alarms_per_ha": overall.get("false_alarms_per_ha"),
        "hectares_per_hour": result.manifest["area_scanned_ha"] / max(hours, 1e-9),
        "outputs": {k: str(v) for k, v in result.outputs.items()}
        | {"model": str(out / "model.onnx"), "checkpoint": str(checkpoint), "evaluation": str(out / "evaluation.md")},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "training": {
            "detector": str(cli.model.hparams.model),
            "steps": int(cli.trainer.global_step),
            "precision": str(cli.trainer.precision),
        },
        "scoring": {
            "tile_px": int(json.loads(result.manifest["model"]["card"])["tile_size_px"]),
            "area_ha": result.manifest["area_scanned_ha"],
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict) -> None:
    print("\n== summary")
    print(f"items found: {summary['items_found']} of {summary['items_present']} present")
    print(f"false alarms: {summary['false_alarms_per_ha']:.1f} per hectare")
    print(f"scoring speed: {summary['hectares_per_hour']:.2f} ha/hour on this machine")
    for name, path in summary["outputs"].items():
        print(f"  {name}: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ordnance.training.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--config", type=Path, default=REPO_CONFIGS / "demo.yaml")
    parser.add_argument("--mosaic-px", type=int, default=5000, help="Survey mosaic side in pixels (1 cm GSD).")
    parser.add_argument("train_args", nargs="*", help="Extra LightningCLI arguments, e.g. --trainer.max_steps=5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    start = time.perf_counter()
    summary = run(args.out, config=args.config, mosaic_px=args.mosaic_px, train_args=args.train_args)
    print_summary(summary)
    print(f"total: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
