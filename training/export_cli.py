"""``ordnance export CHECKPOINT -o model.onnx``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The .onnx file to write.")
@click.option("--tile-size", type=int, default=None, help="Input side in pixels (default: training tile).")
@click.option("--batch", type=int, default=1, show_default=True, help="Fixed batch; 0 = dynamic.")
@click.option("--max-detections", type=int, default=300, show_default=True, help="K rows per output.")
@click.option("--overlap", type=int, default=None, help="Recommended scoring overlap for the card (px).")
@click.option("--parity-data", type=str, default=None, help="data.yaml for parity tiles (default: synthetic).")
@click.option(
    "--parity-tiles",
    type=int,
    default=64,
    show_default=True,
    help="Validation tiles run through both runtimes; the int8 gate reads its recall drop off them.",
)
@click.option(
    "--int8/--no-int8",
    default=None,
    help="Also write a static int8 (QDQ) model, the CPU file. Default: written where its recall gate passes, and"
    " the refusal reported otherwise; --int8: a refusal fails the export; --no-int8: float32 only.",
)
@click.option("--calibration", type=str, default=None, help="data.yaml of training tiles for int8 calibration.")
@click.option(
    "--calibration-method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="minmax",
    show_default=True,
    help="How int8 activation ranges are set.",
)
@click.option(
    "--calibration-tiles",
    type=click.IntRange(1),
    default=None,
    help="Training tiles that calibrate int8 (percentile and entropy keep every activation of each: fewer tiles,"
    " less memory). Default: ExportSettings.calibration_tiles.",
)
@click.option(
    "--int8-max-recall-drop",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Largest int8 recall drop against float32, at the card's threshold on the parity tiles, the gate allows."
    " Default: ExportSettings.max_recall_drop.",
)
@click.option(
    "--int8-ops",
    default="Conv",
    show_default=True,
    help="Comma-separated ONNX operator types to quantise (e.g. Conv,Add,Resize).",
)
@click.option(
    "--test-flips",
    type=click.Choice(["1", "2", "4"]),
    default=None,
    help="Views averaged inside the graph per tile (2: with its left-right flip; 4: and up-down, and both), at that"
    " many times the compute. Default: the checkpoint's model.test_flips.",
)
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Log the file to the training run in MLflow and register a model version.",
)
def export(
    checkpoint,
    output,
    tile_size,
    batch,
    max_detections,
    overlap,
    parity_data,
    parity_tiles,
    int8,
    calibration,
    calibration_method,
    calibration_tiles,
    int8_max_recall_drop,
    int8_ops,
    test_flips,
    register,
) -> None:
    """Export CHECKPOINT to one ONNX file with its model card, after the parity gate."""
    from ordnance.training.export import ExportSettings, export_checkpoint, register_in_mlflow

    settings = ExportSettings(
        tile_size_px=tile_size,
        batch=batch,
        max_detections=max_detections,
        overlap_px=overlap,
        parity_tiles=parity_tiles,
        parity_data=parity_data,
        int8=int8 is not False,
        int8_required=bool(int8),
        calibration=calibration,
        calibration_method=calibration_method,
        int8_op_types=tuple(op.strip() for op in int8_ops.split(",") if op.strip()),
        test_flips=None if test_flips is None else int(test_flips),
        **({} if int8_max_recall_drop is None else {"max_recall_drop": int8_max_recall_drop}),
        **({} if calibration_tiles is None else {"calibration_tiles": calibration_tiles}),
    )
    report = export_checkpoint(checkpoint, output, settings)
    fp32 = report["fp32"]
    click.echo(
        f"{output}: parity {fp32['matched_share']:.4f} matched, max score diff {fp32['max_score_diff']:.2e}, "
        f"recall {fp32['recall_reference']:.3f} (torch) / {fp32['recall_candidate']:.3f} (onnx) at "
        f"{fp32['threshold']:.3f}"
    )
    if "refused" in report.get("int8", {}):
        click.echo(
            f"{output.with_suffix('.int8.onnx')}: not written, the float32 file stands alone: "
            f"{report['int8']['refused']}",
            err=True,
        )
    elif "int8" in report:
        q = report["int8"]
        click.echo(
            f"{output.with_suffix('.int8.onnx')}: recall {q['recall_candidate']:.3f} vs {q['recall_reference']:.3f}"
            f" fp32 on {q['items']} items (largest fall of an item's score {q['item_score_drop']:.3f}),"
            f" {q['speedup']:.2f}x the float32 speed ({q['int8_ms_per_tile']:.0f} vs {q['fp32_ms_per_tile']:.0f}"
            " ms/tile)"
        )
    if register:
        register_in_mlflow(output, report)
