"""Tables of the PFM-1 experiment from results.json: results.md, and the same tables in experiments/README.md
between the ``<!-- pfm1:begin -->`` and ``<!-- pfm1:end -->`` markers.

    .venv/bin/python experiments/pfm1/report.py
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path

from common import HERE, REPO, write_readme_block

ROWS = {
    "real_only": "real tiles only, random init",
    "synth_real": "synthetic checkpoint, then real (16 epochs)",
    "synth_real_long": "synthetic checkpoint, then real (44 epochs or 58 minutes, the cosine decay on the clock)",
    "synth_real_recipe": (
        "synthetic checkpoint, then real (the same schedule; per-pixel augmentation on the crop, validation every"
        " 8 epochs and at the end)"
    ),
    "synth_real_f03": (
        "synthetic checkpoint, then real (the same recipe, half of each epoch from Phan4_200316_F03, the training"
        " flight of the test flight's day and ground)"
    ),
    "synth_real_f03_gpu": "the same recipe with its GPU preset (configs/trainer/gpu.yaml), on the clock of one GPU",
    "synth_real_lookalikes": (
        "synthetic checkpoint, then real (the same recipe with drawn look-alikes pasted unlabelled, up to 3 per"
        " image: the recipe since)"
    ),
    "synth_real_oak": (
        "synthetic checkpoint (retrained with the generator of commit 15a4938), then real (look-alikes as above, two"
        " in seven pale dead oak or maple leaves)"
    ),
    "synth_real_lookalikes_rerun": (
        "the same look-alike recipe again, from the oak stage's synthetic checkpoint, on the faster loader (fill mask"
        " per channel)"
    ),
    "synth_real_lookalikes_seed1": (
        "the row above with another seed (seed_everything 1): how far one run lies from the next"
    ),
    "synth_real_oak_rerun": "the oak-leaf look-alikes again, from the rerun's synthetic checkpoint and loader",
    "soup_lookalikes": (
        "the two seeds' weights averaged (a soup, training/soup.py), its operating point validated on the valid flight"
    ),
    "soup_lookalikes_bn": "the same soup, BatchNorm statistics re-estimated on 100 training batches of the recipe",
    "soup_f4dd80e0": "every run from that synthetic checkpoint averaged: both seeds and both oak-leaf runs",
    "fast_real": (
        "the look-alike recipe with the fast detector (centernet_resnet10_lite, one basic block per stage, patchify"
        " stem), from its own synthetic checkpoint (675eecf3); the same 58 minutes, up to 132 epochs: the recipe since"
    ),
    "fast_real_threads": (
        "the fast detector's recipe again, from a fresh synthetic checkpoint, its training steps on one intra-op"
        " thread per core the two loader workers leave (training/callbacks.py TrainingThreads)"
    ),
    "imagenet_real": (
        "the fast detector's recipe on EfficientNet-Lite0 from its ImageNet weights (centernet_efficientnet_lite0, the"
        " lite shape), no synthetic checkpoint; the same 58 minutes"
    ),
    "imagenet_real_threads": (
        "the ImageNet recipe again, its training steps on torch's own two intra-op threads (training_threads 0):"
        " the recipe since"
    ),
    "imagenet_lite1_real": (
        "the ImageNet recipe on EfficientNet-Lite1 from its ImageNet weights (centernet_efficientnet_lite1: a block"
        " more in each middle stage), on torch's own threads"
    ),
    "imagenet_seams": (
        "the ImageNet recipe with seams: half the training images take one to three quadrants of ground from other"
        " empty training tiles (data.seams 0.5)"
    ),
    "imagenet_real_threads_seed1": (
        "the ImageNet recipe as configs/pfm1.yaml stands, seed 1 (the spread between two runs of the recipe; tests"
        " of this repository shared the CPU for about a quarter of its 58 minutes)"
    ),
    "imagenet_flips2": (
        "the ImageNet recipe as configs/pfm1.yaml stands, validated, tested and exported on two views (each tile and"
        " its left-right flip, their maps averaged: model.test_flips 2), so its operating point is validated on the"
        " views its file runs; twice the model time per tile"
    ),
    "imagenet_seams_seed1": "the ImageNet recipe with seams (data.seams 0.5), seed 1",
    "imagenet_seams_flips2": "the two-view ImageNet recipe (configs/pfm1.yaml) with seams (data.seams 0.5)",
    "imagenet_ensemble3": (
        "imagenet_flips2, imagenet_seams_seed1 and imagenet_seams_flips2 as one ensemble (training/ensemble.py),"
        " each network on two views, its operating point validated on the valid flight: three runs' training"
        " time, six network passes per tile"
    ),
    "imagenet_seams_flips2_seed1": "the ImageNet recipe as configs/pfm1.yaml stands (seams, two views), seed 1",
    "imagenet_seams_ensemble2": (
        "imagenet_seams_flips2 and imagenet_seams_flips2_seed1 (the recipe as it stands, seeds 0 and 1) as one"
        " ensemble, each network on two views, its operating point validated on the valid flight: two runs'"
        " training time, four network passes per tile"
    ),
    "imagenet_ensemble4": (
        "imagenet_ensemble3's three runs and imagenet_seams_flips2_seed1 as one ensemble, each network on two views,"
        " its operating point validated on the valid flight: four runs' training time, eight network passes per tile"
    ),
    "fast_real_2x": (
        "the fast detector's recipe at twice the tiles' resolution (each tile enlarged to 1.47 mm per pixel, 1536 px"
        " tiles, 384 px crops)"
    ),
    "fast_pair_seed0": "the fast detector's recipe in half its time budget (29 minutes): seed 0",
    "fast_pair_seed1": "the same half budget, seed 1",
    "fast_pair_seed2": "the same half budget, seed 2",
    "fast_pair_grey_seed0": "the half budget, seed 0, the colour jitter's saturation down to 0.2 (near grey)",
    "fast_pair_grey_seed1": "the same, seed 1",
    "fast_pair_seed0_rerun": "the half budget, seed 0, again: from the next row's synthetic checkpoint",
    "fast_pair_shade_seed0": (
        "the half budget, seed 0, pasted items (real and drawn) partly shaded or hidden in the grass, 30% each"
    ),
    "fast_pair_ensemble": (
        "the two half-budget runs as one ensemble (training/ensemble.py: both networks on every tile, their maps"
        " averaged), its operating point validated on the valid flight: one run's training time, two networks"
        " per tile"
    ),
    "synth_real_shade_hide": (
        "synthetic checkpoint, then real (look-alikes as above, pasted items partly shaded or hidden in the grass)"
    ),
    "photo_synth_flat_real": "photographic synthetic (the first PFM-1 drawing), then real",
    "photo_synth_real": "photographic synthetic, then real",
    "photo_synth_real_lookalikes": "photographic synthetic, then real with drawn look-alikes pasted unlabelled",
    "zero_shot": "synthetic only (zero-shot, no real pixel)",
    "photo_synth_lookalikes": (
        "photographic synthetic only, notched PFM-1 outline, weathered colours, pasted look-alikes (commit ff7b0c8)"
    ),
    "photo_synth": (
        "photographic synthetic only (real grass, no real item pixel; as above, items kept off the white fill, some"
        " partly shaded or hidden; oak-leaf look-alike of commit b236e24)"
    ),
    "imagenet_photo_synth": (
        "photographic synthetic only on EfficientNet-Lite0 from its ImageNet weights (photographs, then drawn items on"
        " real grass; no real item pixel), 28 minutes"
    ),
    "photo_synth_flat": "photographic synthetic only, the first PFM-1 drawing (flat polygons, dark edges)",
    "photo_synth_lobes": (
        "photographic synthetic only, PFM-1 redrawn as two rounded lobes, clean edges, no pasted look-alikes"
        " (commit a86aceb)"
    ),
}
GSD_ROWS = ("synth_real", "synth_real_5mm", "synth_real_1cm")
RECIPE_GSD_M = 0.00294
BEGIN, END = "<!-- pfm1:begin -->", "<!-- pfm1:end -->"


def _f(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _gsd(entry: dict) -> float:
    args = entry.get("overrides", [])
    return float(args[args.index("--data.gsd_m") + 1]) if "--data.gsd_m" in args else RECIPE_GSD_M


def _mosaic(entry: dict, kind: str = "fp32") -> dict:
    return entry.get("mosaic", {}).get(kind, {})


def _recall_cell(entry: dict, curve: dict) -> str:
    """The mosaic's recall at 10 false alarms per ha, bold, or why there is none: the export was refused or killed."""
    if entry.get("mosaic", {}).get("export_refused"):
        return "export refused (parity gate), not scored"
    if entry.get("mosaic", {}).get("export_killed"):
        return f"not scored: {entry['mosaic']['export_killed']}"
    return f"**{_f(curve.get('recall_at_10_fa_per_ha'))}**"


def _figures(entry: dict) -> tuple[dict, dict, dict, list]:
    """A stage's test-flight metrics, its test mosaic's whole curve and operating point (float32, overall), and its
    valid-flight curve ([[0, None]] without one)."""
    m = _mosaic(entry)
    curve = m.get("curve", {}).get("overall", {})
    op = m.get("operating_point", {}).get("overall", {})
    return entry["test"], curve, op, entry.get("valid_curve") or [[0, None]]


def valid_curve(run_id: str) -> list[tuple[int, float]]:
    """(step, PFM-1 AP50 on the valid flight) of each validation, from the run's MLflow store; [] without it."""
    if not run_id:
        return []
    try:
        from mlflow.tracking import MlflowClient
        from ordnance.training.tracking import default_tracking_uri

        history = MlflowClient(default_tracking_uri()).get_metric_history(run_id, "val/ap50_ap_mine")
    except Exception:  # no store here (a fresh clone): the column stays empty
        return []
    return sorted((m.step, m.value) for m in history)


def ablation_table(results: dict) -> str:
    lines = [
        "| model | working GSD | PFM-1 AP50, valid flight, by validation | PFM-1 AP50, test flight"
        " | mAP50 (PFM-1, casing) | mosaic recall @ 10 FA/ha | mosaic AP"
        " | mosaic recall / FA per ha at the card's threshold | training minutes | MLflow run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, label in ROWS.items():
        if key not in results:
            lines.append(f"| {label} | not run | | | | | | | | |")
            continue
        entry = results[key]
        test = entry["test"]
        m = _mosaic(entry)
        curve = m.get("curve", {}).get("overall", {})
        op = m.get("operating_point", {}).get("overall", {})
        at_op = f"{_f(op.get('recall'))} / {_f(op.get('false_alarms_per_ha'), 0)}" if op else ""
        curve_points = entry.get("valid_curve") or valid_curve(entry.get("mlflow_run", ""))
        valid = ", ".join(_f(v, 2) for _, v in curve_points)
        minutes = _f(entry.get("train_minutes"), 1)
        if entry.get("trained"):  # how far the time budget got: epochs and optimizer steps
            minutes += f" ({entry['trained']['epochs']} epochs, {entry['trained']['steps']} steps)"
        if entry.get("train_device"):  # trained elsewhere (gpu_fit.py): the device, epochs and batch say how much
            record = entry.get("train_record", {})
            minutes += (
                f" on {entry['train_device']} ({record.get('epochs')} epochs of batch {record.get('batch_size')},"
                f" {record.get('precision')})"
            )
        lines.append(
            f"| {label} | {_gsd(entry) * 1000:.2f} mm | {valid} | **{_f(test.get('test/ap50_ap_mine'))}** | "
            f"{_f(test.get('test/map50'))} | {_recall_cell(entry, curve)} | {_f(curve.get('ap'))} | "
            f"{at_op} | {minutes} | {entry.get('mlflow_run', '')[:8]} |"
        )
    return "\n".join(lines)


def budget_note(results: dict, stage: str = "imagenet_real") -> str:
    """What 10 false alarms per ha allows on the test mosaic, from a stage's evaluation of it."""
    curve = _mosaic(results.get(stage, {})).get("curve", {})
    area, items = curve.get("area_ha"), curve.get("overall", {}).get("n_truth")
    if not area or not items:
        return ""
    allowed = 10 * area
    return (
        f"The test mosaic's scanned ground is {area:.4f} ha (`ordnance evaluate`, stage {stage}), so 10 false alarms"
        f" per ha allows {allowed:.2f} false alarms, that is {math.floor(allowed)}: recall at 10 FA/ha is the share"
        f" of its {items} items scored above the mosaic's highest-scoring false alarm (a duplicate of an item counts"
        f" as one), and a single false alarm scored above k items lowers it by k/{items}. The goal of 95% asks for"
        f" {math.ceil(0.95 * items)} of the {items} items above every false alarm on the mosaic."
    )


def seam_table(sheets: dict) -> str:
    """Where each stage's highest false alarms lie on the test mosaic (false_alarms.py): on a seam where two tiles,
    photographed apart, meet, or inside a tile."""
    rows = {k: v for k, v in sorted(sheets.items()) if "false_alarms_on_seams" in v}
    if not rows:
        return ""
    band = next(iter(rows.values()))
    lines = [
        "| stage | items above the top false alarm | false alarms per ha to find 90% / 95% / every item"
        " | of the 5 / 16 / 50 highest false alarms, within"
        f" {band['seam_band_px']} px of their tile's edge | edge distance of the 16 highest (px) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, v in rows.items():
        seams = v["false_alarms_on_seams"]
        per_ha = v.get("false_alarms_per_ha_to_find") or {}
        to_find = " / ".join(
            "none" if k in per_ha and per_ha[k] is None else _f(per_ha.get(k), 0) for k in ("0.9", "0.95", "1")
        )
        lines.append(
            f"| {name} | {v['items_above_the_top_false_alarm']} of {v['items']} | "
            f"{to_find if per_ha else 'not measured'} | "
            f"{seams.get('top_5', '')} / {seams.get('top_16', '')} / {seams.get('top_50', '')} | "
            f"{', '.join(str(d) for d in v['top_false_alarm_edge_px'])} |"
        )
    lines += [
        "",
        f"That band holds {band['seam_band_area_share']:.1%} of the mosaic's pixels. The mosaic lays the test flight's"
        " tiles side by side (mosaic.py), so each tile meets its neighbours with a step in exposure and texture that"
        " no training crop holds. False alarms per ha to find a share of the items: the false alarms scored at or"
        " above the lowest score that still finds that share (a threshold set there), over the mosaic's scanned"
        " area; what an analyst reviews for that recall (none: an item has no candidate at the scored 0.02; not"
        " measured: the sheet was made before this column, from a scoring no longer on this machine).",
    ]
    return "\n".join(lines)


def gsd_table(results: dict, speed: dict) -> str:
    lines = [
        "| working GSD | PFM-1 AP50, test flight | hazard AP, test flight | hazard recall (validated threshold) |"
        " mosaic AP | tiles on the test mosaic | ha/h fp32 | ha/h int8 | export |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in GSD_ROWS:
        if key not in results:
            continue
        entry, test = results[key], results[key]["test"]
        m = _mosaic(entry)
        rates = speed.get(key, {})
        refused = entry.get("mosaic", {}).get("export_refused") or entry.get("mosaic", {}).get("export_killed")
        lines.append(
            f"| {_gsd(entry) * 1000:.2f} mm | {_f(test.get('test/ap50_ap_mine'))} | {_f(test.get('test/hazard_ap'))} | "
            f"{_f(test.get('test/recall'))} | {_f(m.get('curve', {}).get('overall', {}).get('ap'))} | "
            f"{rates.get('fp32', {}).get('tiles', '')} | {_f(rates.get('fp32', {}).get('ha_per_h_wall'), 1)} | "
            f"{_f(rates.get('int8', {}).get('ha_per_h_wall'), 1)} | {'refused: ' + refused if refused else 'passed'} |"
        )
    return "\n".join(lines)


def int8_table(results: dict) -> str:
    lines = [
        "| model | file | parity | mosaic recall @ 10 FA/ha | mosaic AP | recall / FA per ha at the card's threshold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, entry in results.items():
        mosaic = entry.get("mosaic", {})
        for kind in ("fp32", "int8"):
            if kind not in mosaic:
                continue
            parity = mosaic["parity"].get(kind, {})
            curve = mosaic[kind]["curve"]["overall"]
            op = mosaic[kind]["operating_point"]["overall"]
            lines.append(
                f"| {key} | {kind} | {_f(parity.get('matched_share'), 4)} matched | "
                f"{_f(curve.get('recall_at_10_fa_per_ha'))} | {_f(curve.get('ap'))} | "
                f"{_f(op.get('recall'))} / {_f(op.get('false_alarms_per_ha'), 0)} |"
            )
        if "int8_refused" in mosaic:  # the export's int8 gate refused the file: the reason, in one line
            reason = mosaic["int8_refused"].split(": ", 1)[-1]
            lines.append(f"| {key} | int8 | refused: {reason} | | | |")
    return "\n".join(lines)


# flips.py entries named after a checkpoint rather than an ablation stage
FLIPS_LABELS = {
    "second_stage": "second_stage (the resnet18 recipe's model after the review loop's control: 120 low-rate steps)"
}


def flips_table(flips: dict) -> str:
    """Test-time flips (flips.py): one row per stage and view count."""
    lines = [
        "| model | views averaged | PFM-1 AP50, valid flight | PFM-1 AP50, test flight | mAP50, test flight"
        " | mosaic recall @ 10 FA/ha | mosaic AP | mosaic recall / FA per ha at the card's threshold"
        " | model seconds on the test mosaic | seconds per test-flight pass |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in sorted(flips, key=lambda k: (flips[k]["stage"], flips[k]["flips"])):
        entry = flips[key]
        valid, test = entry.get("valid", {}), entry.get("test", {})
        m = entry.get("mosaic", {}).get("fp32", {})
        curve = m.get("curve", {}).get("overall", {})
        op = m.get("operating_point", {}).get("overall", {})
        at_op = f"{_f(op.get('recall'))} / {_f(op.get('false_alarms_per_ha'), 0)}" if op else ""
        lines.append(
            f"| {FLIPS_LABELS.get(entry['stage'], entry['stage'])} | {entry['flips']} | "
            f"{_f(valid.get('val/ap50_ap_mine'))} | "
            f"**{_f(test.get('test/ap50_ap_mine'))}** | {_f(test.get('test/map50'))} | "
            f"{_f(curve.get('recall_at_10_fa_per_ha'))} | {_f(curve.get('ap'))} | {at_op} | "
            f"{_f(m.get('timings', {}).get('infer_s'), 0)} | {_f(entry.get('test_seconds'), 0)} |"
        )
    return "\n".join(lines)


ENSEMBLE_ROWS = (("fast_real", 1), ("fast_pair_seed0", 1), ("fast_pair_seed1", 1), ("fast_pair_ensemble", 2))
# The ImageNet runs the three-run ensemble joins, and the ensemble: network passes per tile (networks x views).
ENSEMBLE3_ROWS = (
    ("imagenet_flips2", 2),
    ("imagenet_seams_seed1", 1),
    ("imagenet_seams_flips2", 2),
    ("imagenet_ensemble3", 6),
)
# The recipe as it stands, its two seeds, and those two as one ensemble.
RECIPE_ENSEMBLE_ROWS = (
    ("imagenet_seams_flips2", 2),
    ("imagenet_seams_flips2_seed1", 2),
    ("imagenet_seams_ensemble2", 4),
)
# imagenet_ensemble3 with the recipe's seed 1 as a fourth member.
ENSEMBLE4_ROWS = (
    ("imagenet_ensemble3", 6),
    ("imagenet_seams_flips2_seed1", 2),
    ("imagenet_ensemble4", 8),
)


def ensemble_table(results: dict, rows=ENSEMBLE_ROWS, passes: str = "networks per tile") -> str:
    """Runs against their ensemble (the last of ``rows``): training time, network passes per tile, accuracy."""
    if rows[-1][0] not in results:
        return ""
    lines = [
        f"| model | training minutes | {passes} | PFM-1 AP50, valid flight (last validation)"
        " | PFM-1 AP50, test flight | mAP50 | mosaic recall @ 10 FA/ha | mosaic AP"
        " | mosaic recall / FA per ha at the card's threshold | model seconds on the test mosaic (fp32 / int8) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, networks in rows:
        if key not in results:
            continue
        entry = results[key]
        test, curve, op, valid = _figures(entry)
        seconds = " / ".join(_f(_mosaic(entry, k).get("timings", {}).get("infer_s"), 1) for k in ("fp32", "int8"))
        lines.append(
            f"| {key} | {_f(entry.get('train_minutes'), 1)} | {networks} | {_f(valid[-1][1])} | "
            f"**{_f(test.get('test/ap50_ap_mine'))}** | {_f(test.get('test/map50'))} | "
            f"**{_f(curve.get('recall_at_10_fa_per_ha'))}** | {_f(curve.get('ap'))} | "
            f"{_f(op.get('recall'))} / {_f(op.get('false_alarms_per_ha'), 0)} | {seconds} |"
        )
    return "\n".join(lines)


def ensemble_section(results: dict, title: str, rows, note: str, passes: str = "networks per tile") -> list[str]:
    """A heading, the ensemble table of ``rows`` and its note; nothing before the ensemble (the last row) ran."""
    table = ensemble_table(results, rows, passes)
    return [title, table, note] if table else []


GREY_PAIRS = (("fast_pair_seed0", "fast_pair_grey_seed0"), ("fast_pair_seed1", "fast_pair_grey_seed1"))
SHADE_PAIRS = (("fast_pair_seed0_rerun", "fast_pair_shade_seed0"),)
THREADS_PAIRS = (("fast_real", "fast_real_threads"),)


def _override(entry: dict, flag: str) -> str | None:
    """The value ``entry`` was run with for the LightningCLI ``flag``, or None where it kept the recipe's."""
    args = entry.get("overrides", [])
    return args[args.index(flag) + 1] if flag in args else None


def _synthetic_run(entry: dict) -> str:
    """The MLflow run (8 characters) of the checkpoint a stage started from: ``<root>/<exp>/<run>/checkpoints/...``."""
    path = Path(str(entry.get("init") or ""))
    return path.parents[1].name[:8] if path.parent.name == "checkpoints" else ""


def paired_table(results: dict, pairs, column: str, setting) -> str:
    """Half-budget runs, seed for seed, with one setting changed: ``column`` names it, ``setting(entry)`` gives its
    value in each row. Steps per second: the steps over the run's wall clock, validations included."""
    lines = [
        f"| seed | {column} | synthetic checkpoint | training minutes (epochs) | steps (per second)"
        " | PFM-1 AP50, valid flight (last validation) | PFM-1 AP50, test flight | mAP50 | mosaic recall @ 10 FA/ha"
        " | mosaic AP | mosaic recall / FA per ha at the card's threshold |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, pair in enumerate(pairs):
        if not all(k in results for k in pair):
            continue
        for key in pair:
            entry = results[key]
            test, curve, op, valid = _figures(entry)
            trained, minutes = entry.get("trained", {}), entry.get("train_minutes")
            rate = trained["steps"] / (60 * minutes) if "steps" in trained and minutes else None
            lines.append(
                f"| {seed} | {setting(entry)} | {_synthetic_run(entry)} | {_f(minutes, 1)} ({trained.get('epochs')})"
                f" | {trained.get('steps', '')} ({_f(rate, 2)}) | {_f(valid[-1][1])}"
                f" | **{_f(test.get('test/ap50_ap_mine'))}** | {_f(test.get('test/map50'))} | "
                f"**{_f(curve.get('recall_at_10_fa_per_ha'))}** | {_f(curve.get('ap'))} | "
                f"{_f(op.get('recall'))} / {_f(op.get('false_alarms_per_ha'), 0)} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def grey_table(results: dict) -> str:
    """The half-budget pair, seed for seed, without and with the colour jitter's saturation reaching near grey."""

    def factors(entry: dict) -> str:
        value = _override(entry, "--data.augment.saturation")
        return "0.75 to 1.25 (the recipe)" if value is None else " to ".join(value.strip("[]").split(", "))

    return paired_table(results, GREY_PAIRS, "saturation factors", factors)


def _shade_hide(entry: dict) -> str:
    shade, hide = (_override(entry, f"--data.copy_paste.{k}") for k in ("shade", "hide"))
    if shade is None and hide is None:
        return "never (the recipe)"
    return f"{float(shade or 0):.0%} / {float(hide or 0):.0%} of pastes"


def shade_table(results: dict) -> str:
    """The half budget without and with pasted items partly shaded or hidden."""
    return paired_table(results, SHADE_PAIRS, "pasted items shaded / hidden", _shade_hide)


def _threads(entry: dict) -> str:
    threads = entry.get("trained", {}).get("cpu_threads")
    return "torch's own, one per core" if threads is None else f"{threads} (the cores the loader workers leave)"


def threads_table(results: dict) -> str:
    """The recipe's whole budget before and with TrainingThreads."""
    return paired_table(results, THREADS_PAIRS, "intra-op threads of the training steps", _threads)


BACKBONE_ROWS = (
    ("fast_real_threads", "synthetic scenes (configs/synthetic.yaml)", "yes"),
    ("imagenet_real", "ImageNet", "yes"),
    ("imagenet_real_threads", "ImageNet", "yes"),
    ("imagenet_lite1_real", "ImageNet", "yes"),
    ("imagenet_seams", "ImageNet", "yes"),
    ("imagenet_real_threads_seed1", "ImageNet", "yes"),
    ("imagenet_seams_seed1", "ImageNet", "yes"),
    ("imagenet_flips2", "ImageNet", "yes"),
    ("imagenet_seams_flips2", "ImageNet", "yes"),
    ("imagenet_seams_flips2_seed1", "ImageNet", "yes"),
    ("photo_synth", "synthetic scenes (configs/synthetic_resnet18.yaml)", "no"),
    ("imagenet_photo_synth", "ImageNet", "no"),
)


def backbone_table(results: dict) -> str:
    """What the backbone starts from: synthetic scenes or ImageNet photographs, with and without real items."""
    lines = [
        "| stage | detector | backbone starts from | real items in training | training threads"
        " | training minutes (epochs, steps)"
        " | PFM-1 AP50, valid flight (last validation) | PFM-1 AP50, test flight | mAP50 | mosaic recall @ 10 FA/ha"
        " | mosaic AP | mosaic recall / FA per ha at the card's threshold | model seconds on the test mosaic |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if "imagenet_real" not in results:
        return ""
    for key, start, real in BACKBONE_ROWS:
        if key not in results:
            continue
        entry = results[key]
        test, curve, op, valid = _figures(entry)
        trained = entry.get("trained", {})
        model = _override(entry, "--model.model") or "its config's"
        minutes = _f(entry.get("train_minutes"), 1)
        if trained:
            minutes += f" ({trained['epochs']}, {trained['steps']})"
        lines.append(
            f"| {key} | {model} | {start} | {real} | {trained.get('cpu_threads', '')} | {minutes} | "
            f"{_f(valid[-1][1])} | "
            f"**{_f(test.get('test/ap50_ap_mine'))}** | "
            f"{_f(test.get('test/map50'))} | {_recall_cell(entry, curve)} | {_f(curve.get('ap'))} | "
            f"{_f(op.get('recall')) + ' / ' + _f(op.get('false_alarms_per_ha'), 0) if op else ''} | "
            f"{_f(_mosaic(entry).get('timings', {}).get('infer_s'), 1)} |"
        )
    return "\n".join(lines)


def second_stage_table(second: dict) -> str:
    """A second, low-rate stage (second_stage.py): each run and its second stage, on the same code."""
    lines = [
        "| run | steps of the second stage | minutes | PFM-1 AP50, valid flight: run / second stage"
        " | PFM-1 AP50, test flight: run / second stage | mAP50, test flight: run / second stage |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(second):
        entry = second[name]
        parent, after = entry.get("parent", {}), entry.get("second", {})
        if "test" not in after:
            continue

        def pair(field: str, key: str, parent=parent, after=after) -> str:
            return f"{_f(parent.get(field, {}).get(key))} / **{_f(after.get(field, {}).get(key))}**"

        lines.append(
            f"| {name} | {entry['steps']} | {_f(after.get('minutes'), 1)} | {pair('valid', 'val/ap50_ap_mine')} | "
            f"{pair('test', 'test/ap50_ap_mine')} | {pair('test', 'test/map50')} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def masked_table(masked: dict) -> str:
    """The test mosaic as the tiles are (fill scored as ground) against the same tiles with the orthophotos' fill as
    no data (masked.py), each exported file on both."""
    mosaics = masked.get("mosaics", {})
    if not mosaics:
        return ""
    lines = [
        "| model | mosaic | scanned ha | mosaic recall @ 10 FA/ha | mosaic AP"
        " | recall / FA per ha at the card's threshold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    labels = {"as_tiles": "tiles as exported", "fill_masked": "fill as no data"}
    for name in sorted(k for k in masked if k != "mosaics"):
        for kind, label in labels.items():
            entry = masked[name].get(kind)
            if not entry:
                continue
            curve, op = entry["curve"]["overall"], entry["operating_point"]["overall"]
            lines.append(
                f"| {name} | {label} | {_f(entry['curve']['area_ha'], 4)} | "
                f"**{_f(curve.get('recall_at_10_fa_per_ha'))}** | {_f(curve.get('ap'))} | "
                f"{_f(op.get('recall'))} / {_f(op.get('false_alarms_per_ha'), 0)} |"
            )
    fill = mosaics.get("fill_masked", {})
    note = (
        f"Fill masked: {_f(fill.get('fill_ha'), 4)} ha of the {_f(mosaics.get('as_tiles', {}).get('area_ha'), 4)} ha"
        " the tiles cover. Scanned ha: the coverage layer's area (window cores cut to the pixels that held data),"
        " which `ordnance evaluate` divides false alarms by."
    )
    return "\n".join(lines) + "\n\n" + note


def gpu_note(results: dict) -> str:
    """What the GPU row's run did, from its record (gpu_run/: gpu_fit.json and nvidia-smi's utilisation log)."""
    entry = results.get("synth_real_f03_gpu")
    if not entry:
        return ""
    record = entry["train_record"]
    samples = record["steps"] * record["batch_size"]
    util_file = HERE / "gpu_run" / "gpu_util.csv"
    util = []
    if util_file.exists():
        for line in util_file.read_text().splitlines():
            head = line.split(",")[0].strip().rstrip("%").strip()
            if head.isdigit():
                util.append(int(head))
    busy = (
        f" GPU utilisation, sampled every 15 s by nvidia-smi: median {statistics.median(util):.0f}%, highest"
        f" {max(util)}% (gpu_run/gpu_util.csv)."
        if util
        else ""
    )
    rate = samples / (entry["train_minutes"] * 60)
    loader_file = HERE / "loader_speed_16cores.json"
    if loader_file.exists():
        loader = json.loads(loader_file.read_text())["median_samples_per_s"]["opencv_default"]
        busy += (
            f" The run consumed {rate:.0f} crops per second; the same machine's loader alone delivers {loader:.0f}"
            " (loader_speed.py), so neither the GPU nor the loader set the pace, but the training step's own work on"
            " the CPU (not profiled)."
        )
    return (
        f"GPU row: `experiments/pfm1/gpu_fit.py` on one {entry['train_device']} (torch {record['torch']}), "
        f"{entry['train_minutes']:.1f} minutes, {record['epochs']} epochs, {record['steps']} steps of batch "
        f"{record['batch_size']} ({samples} training crops); tested and scored on this CPU like every row.{busy}"
    )


def per_flight_table(results: dict, per_flight: dict) -> str:
    """per_flight.py: PFM-1 AP50 of one checkpoint on each flight in one pass, training flights first; only
    checkpoints measured with --held-out (valid and test flight beside the training flights)."""
    stage = {entry.get("checkpoint"): name for name, entry in results.items() if isinstance(entry, dict)}
    measured = {ckpt: f for ckpt, f in per_flight.items() if any(v.get("split") == "test" for v in f.values())}
    if not measured:
        return ""
    order = {"train": 0, "valid": 1, "test": 2}
    flights = {(v["split"], g) for f in measured.values() for g, v in f.items()}
    flights = sorted(flights, key=lambda t: (order[t[0]], t[1]))
    lines = [
        "| model | " + " | ".join(f"{g} ({split})" for split, g in flights) + " |",
        "| --- | " + " | ".join("---" for _ in flights) + " |",
    ]
    for ckpt, f in measured.items():
        name = stage.get(ckpt) or stage.get(os.path.join(str(REPO), ckpt)) or ckpt
        cells = [_f(f.get(g, {}).get("ap50", {}).get("ap_mine")) for _, g in flights]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results: dict, speed: dict, flips: dict | None = None, second: dict | None = None,
           masked: dict | None = None, per_flight: dict | None = None, sheets: dict | None = None) -> str:  # fmt: skip
    second_rows = second_stage_table(second or {})
    grey_rows = grey_table(results)
    shade_rows = shade_table(results)
    threads_rows = threads_table(results)
    backbone_rows = backbone_table(results)
    masked_rows = masked_table(masked or {})
    seam_rows = seam_table(sheets or {})
    fit_rows = per_flight_table(results, per_flight or {})
    return "\n\n".join(
        [
            "#### Ablation (test flight Phan4_200316_F02, 179 tiles, 33 items; test mosaic of the same tiles)",
            ablation_table(results),
            budget_note(results),
            gpu_note(results),
            *ensemble_section(
                results,
                "#### Two half-budget runs as one ensemble, against one run of the full budget",
                ENSEMBLE_ROWS,
                "The pair's three rows ran in one session, from a synthetic checkpoint retrained with"
                " configs/synthetic.yaml (its MLflow run in each row's `init` in results.json); fast_real started"
                " from the recipe's earlier run of it (675eecf3). Model seconds: ONNX Runtime's time in"
                " `ordnance score` on the test mosaic, as run by `run.py` right after each stage (not the"
                " idle-machine timing of speed.py); fast_real's were taken on another day beside other jobs, so"
                " only the pair's rows compare with each other.",
            ),
            *ensemble_section(
                results,
                "#### Three ImageNet runs as one ensemble (stage `imagenet_ensemble3`)",
                ENSEMBLE3_ROWS,
                "The ensemble joins the three runs' best checkpoints (training/ensemble.py) and averages the"
                " six maps of each tile (three networks, each on the tile and its left-right flip); its"
                " operating point is validated on the valid flight on those views, and its exported file runs"
                " them. imagenet_seams_seed1's own row is on one view, as it was validated. Training minutes:"
                " the members' summed, one after another on this CPU. Model seconds: ONNX Runtime's time in"
                " `ordnance score` on the test mosaic, as run.py ran each stage. The ensemble has no int8 file:"
                " its percentile calibration on 8 tiles was killed for memory on this 24 GiB machine, and the"
                " export now refuses such a calibration with its estimate (training/export.py,"
                " `calibration_memory_bytes`); its float32 file was exported and scored again"
                " (`run.py --reexport imagenet_ensemble3`).",
                "network passes per tile (networks x views)",
            ),
            *ensemble_section(
                results,
                "#### The recipe's two seeds as one ensemble (stage `imagenet_seams_ensemble2`)",
                RECIPE_ENSEMBLE_ROWS,
                "configs/pfm1.yaml as it stands (seams, two views) with seeds 0 and 1, and the two joined"
                " (training/ensemble.py): four maps averaged per tile, the operating point validated on the valid"
                " flight on those views. The seed rows show how far one run of the recipe lies from the next;"
                " the ensemble row what a second run buys at twice the model time. Training minutes and model"
                " seconds as in the table above.",
                "network passes per tile (networks x views)",
            ),
            *ensemble_section(
                results,
                "#### Four ImageNet runs as one ensemble (stage `imagenet_ensemble4`)",
                ENSEMBLE4_ROWS,
                "imagenet_ensemble3 with the recipe's seed 1 as a fourth member: eight maps averaged per tile,"
                " the operating point validated again on the valid flight. Training minutes and model seconds as"
                " in the tables above.",
                "network passes per tile (networks x views)",
            ),
            "#### Working GSD (synthetic checkpoint, then real, the earlier 16-epoch schedule each)",
            gsd_table(results, speed),
            "ha/h: `ordnance score` wall time on the test mosaic, the files run one after another on the idle"
            " machine (`experiments/pfm1/speed.py`, speed.json).",
            "#### Exported files on the test mosaic",
            int8_table(results),
            *(
                [
                    "#### Test-time flips (`experiments/pfm1/flips.py`: the maps of the tile and its flips averaged,"
                    " in validation, test and the exported graph)",
                    flips_table(flips),
                    "Each view count is a fresh export (`--test-flips`); the card's threshold was validated on one "
                    "view, so with 2 or 4 views the operating point is unknown and the last column reads the same"
                    " threshold on other maps. Model seconds: ONNX Runtime's time in `ordnance score` on the test"
                    " mosaic (float32); seconds per pass: the test flight's `ordnance train test`; both on this CPU"
                    " beside other jobs.",
                ]
                if flips
                else []
            ),
            *(
                [
                    "#### Colour jitter down to nearly grey (stages `fast_pair_grey_seed0`, `fast_pair_grey_seed1`)",
                    grey_rows,
                    "Each pair of rows: one seed, the same synthetic checkpoint, budget (29 minutes) and code but the"
                    " saturation factors of the colour jitter (`data.augment.saturation`).",
                ]
                if grey_rows
                else []
            ),
            *(
                [
                    "#### Pasted items partly shaded or hidden (stage `fast_pair_shade_seed0`)",
                    shade_rows,
                    "The same seed, budget and recipe, but a pasted item (real or drawn) lies partly in a soft"
                    " shadow edge (the first share of pastes) or has up to half its box covered by the ground it"
                    " lands on (the second): `data.copy_paste.shade` and `.hide`. Both rows start from the synthetic"
                    " checkpoint the column names (its MLflow run) and ran in one session, one after the other.",
                ]
                if shade_rows
                else []
            ),
            *(
                [
                    "#### The recipe's whole budget on the training threads (stage `fast_real_threads`)",
                    threads_rows,
                    "Both rows: configs/pfm1.yaml as it stands (58-minute budget, up to 132 epochs), seed 0, from the"
                    " synthetic checkpoint the column names (its MLflow run), on different days; the second trained"
                    " its steps on the threads of `TrainingThreads` (fit_speed.py) and reached the epoch cap before"
                    " the clock. Steps per second: over the run's wall clock, validations included. The table shows"
                    " what the recipe reaches on this CPU with them, not an effect measured in isolation: the"
                    " synthetic checkpoints differ, and one run per row is within the spread two seeds have shown"
                    " on the test mosaic's recall at 10 false alarms per ha.",
                ]
                if threads_rows
                else []
            ),
            *(
                [
                    "#### What the backbone starts from: synthetic scenes or ImageNet photographs (stages"
                    " `imagenet_real`, `imagenet_real_threads`, `imagenet_lite1_real`, `imagenet_seams`,"
                    " `imagenet_real_threads_seed1`, `imagenet_seams_seed1`, `imagenet_flips2`,"
                    " `imagenet_seams_flips2`, `imagenet_seams_flips2_seed1`, `imagenet_photo_synth`)",
                    backbone_rows,
                    "Each row: one run, seed 0 (seed 1 where the stage ends in _seed1), trained on a 2-core CPU"
                    " beside its two loader workers; training"
                    " threads: the intra-op threads of its training steps as its checkpoint records them (1:"
                    " TrainingThreads' rule, 2: torch's own, `training_threads: 0`; photo_synth ran on an earlier day,"
                    " before TrainingThreads, on configs/pfm1_photosynth.yaml's centernet_resnet18). The ImageNet rows"
                    " start from EfficientNet-Lite0's (imagenet_lite1_real: Lite1's) ImageNet weights"
                    " (models/efficientnet_lite.py) with new FPN and heads; the others from a synthetic checkpoint"
                    " (the row's `init` in results.json). Model seconds: ONNX Runtime's time in `ordnance score` on"
                    " the test mosaic (float32), as run.py ran it after training; photo_synth's on another day and"
                    " detector.",
                ]
                if backbone_rows
                else []
            ),
            *(
                [
                    "#### A second, low-rate stage (`experiments/pfm1/second_stage.py`: configs/finetune_review.yaml"
                    " with no reviewed survey, from each run's checkpoint)",
                    second_rows,
                    "Both columns of a pair validated and tested in float32 with one view on the same code; bold: the"
                    " second stage.",
                ]
                if second_rows
                else []
            ),
            *(
                [
                    "#### The test mosaic with the orthophotos' fill as no data (`experiments/pfm1/masked.py`)",
                    masked_rows,
                ]
                if masked_rows
                else []
            ),
            *(
                [
                    "#### Where the highest false alarms lie on the test mosaic (`experiments/pfm1/false_alarms.py`)",
                    seam_rows,
                ]
                if seam_rows
                else []
            ),
            *(
                [
                    "#### PFM-1 AP50 on each flight, training flights included (`experiments/pfm1/per_flight.py"
                    " --held-out`)",
                    fit_rows,
                    "One checkpoint, one pass over every flight's tiles whole, float32, one view, no augmentation;"
                    " torchmetrics' AP50 (the training's validation and test report the same metric).",
                ]
                if fit_rows
                else []
            ),
        ]
    )


def main() -> int:
    os.chdir(REPO)  # the MLflow store and the recipes' data paths are relative to the repository root
    results = json.loads((HERE / "results.json").read_text())
    speed_file = HERE / "speed.json"
    speed = json.loads(speed_file.read_text()) if speed_file.exists() else {}
    flips_file = HERE / "flips.json"
    flips = json.loads(flips_file.read_text()) if flips_file.exists() else {}
    extra = {}
    for key, name in (("second", "second_stage.json"), ("masked", "masked.json"), ("per_flight", "per_flight.json")):
        path = HERE / name
        extra[key] = json.loads(path.read_text()) if path.exists() else {}
    extra["sheets"] = {
        path.stem.removeprefix("false_alarms_"): json.loads(path.read_text())
        for path in HERE.glob("false_alarms_*.json")
    }
    text = render(results, speed, flips, **extra)
    (HERE / "results.md").write_text(text + "\n")
    write_readme_block(BEGIN, END, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
