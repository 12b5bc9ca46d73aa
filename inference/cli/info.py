"""``ordnance info``: what an exported model is and what it takes, as ``rio info`` does for a raster."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click


def describe_model(path: Path) -> dict:
    """The card, the graph's input and outputs, and the file's hash of an exported detector (contract checked)."""
    from ordnance.inference.session import open_session

    detector = open_session(path)
    session = detector.session
    tensors = [{"name": t.name, "type": t.type, "shape": [d if isinstance(d, int) else str(d) for d in t.shape]}
               for t in (*session.get_inputs(), *session.get_outputs())]  # fmt: skip
    return {"path": str(path), "sha256": detector.sha256, "size_mb": path.stat().st_size / 1e6,
            "input": tensors[0], "outputs": tensors[1:], "card": asdict(detector.card)}  # fmt: skip


def _parity(parity: dict) -> list[str]:
    """One line per check of the export gate: this file against PyTorch (fp32) or against the fp32 file (int8)."""
    labels = {"fp32": "against PyTorch", "int8_vs_fp32": "int8 against fp32"}
    lines = []
    for key, report in parity.items():
        if not isinstance(report, dict) or "matched_share" not in report:
            continue
        line = (f"{labels.get(key, key)}: {report['matched_share']:.4f} of {report.get('detections_compared', '?')} "
                f"detections matched on {report.get('tiles', '?')} tiles, max score difference "
                f"{report.get('max_score_diff', float('nan')):.2g}")  # fmt: skip
        if "recall_candidate" in report:
            line += f", recall {report['recall_candidate']:.3f} (reference {report['recall_reference']:.3f})"
        if "speedup" in report:
            line += f", {report['speedup']:.2f}x faster"
        lines.append(line)
    return [("parity         " if i == 0 else "               ") + t for i, t in enumerate(lines)] or [
        "parity         not recorded (exported without the gate)"
    ]


def _text(info: dict) -> str:
    card = info["card"]
    gsd = f"{card['gsd_m'] * 100:.3g} cm/px" if card["gsd_m"] else "none (frames at varying heights; never resampled)"
    point = card["operating_point"]
    threshold = (
        f"{card['score_threshold']:.3f} ({point}{'' if point == 'validated' else ': check it on your own data'})"
    )
    parity = card.get("parity") or {}
    lines = [
        f"{info['path']}  ({info['size_mb']:.1f} MB, sha256 {info['sha256'][:16]})",
        f"model          {card['model_name']} version {card['model_version']} ({card['quantization']}, opset "
        f"{card['opset']}, {card['exporter'] or 'exporter not recorded'})",
        f"classes        {', '.join(card['class_names'])}",
        f"GSD            {gsd}",
        f"tile           {card['tile_size_px']} px, overlap {card['overlap_px']} px, batch "
        f"{card['batch_size'] or 'dynamic'}, up to {card['max_detections']} detections per tile"
        + (f"; each tile averaged over {card['test_flips']} flipped views" if card.get("test_flips", 1) > 1 else ""),
        f"threshold      {threshold}",
        f"bands          {list(card['band_order'])} -> R, G, B; {card['input_scaling']}",
        *_parity(parity),
        f"input          {info['input']['name']} {info['input']['type']} {info['input']['shape']}",
        "outputs        " + ", ".join(f"{o['name']} {o['type']} {o['shape']}" for o in info["outputs"]),
    ]
    if card.get("mlflow_run_id"):
        lines.append(f"training run   MLflow {card['mlflow_run_id']}")
    lineage = card.get("lineage") or {}
    if lineage.get("parent"):
        parent = lineage["parent"]
        lines.append(f"fine-tuned on  {parent.get('init_checkpoint', '?')} (weights sha256 "
                     f"{str(parent.get('weights_sha256', ''))[:16]})")  # fmt: skip
    if lineage.get("decisions"):
        d = lineage["decisions"]
        lines.append(f"review         {d.get('confirmed', 0)} confirmed, {d.get('rejected', 0)} rejected decisions "
                     f"from {len(lineage.get('runs', []))} run(s)")  # fmt: skip
    return "\n".join(lines)


@click.command("info")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The full card and contract as JSON.")
def info(model: Path, as_json: bool) -> None:
    """Print an exported model's card and input contract (classes, GSD, tile, threshold, parity, lineage)."""
    described = describe_model(model)
    click.echo(json.dumps(described, indent=1) if as_json else _text(described))
