"""Export a trained detector to one self-describing ONNX file, gated on parity with PyTorch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from ordnance.inference.card import CARD_KEY, INPUT_NAME, OUTPUT_NAMES, ModelCard
from ordnance.inference.errors import OrdnanceError
from ordnance.inference.metrics import match_points
from ordnance.inference.preprocess import pad_to_tile
from ordnance.inference.writers import atomic_path, write_json
from ordnance.models import ExportRefused, input_scaling, weights_sha256

log = logging.getLogger(__name__)

OPSET = 18
EDGE_TOLERANCE_PX = 0.25  # a box edge this close is the same box, whatever its size
# A choice won by less than NOISE_FACTOR times the largest score difference the two runtimes show (at least
# NOISE_FLOOR) is a near-tie: the runtimes may decide it either way at the same scores.
NOISE_FACTOR = 20.0
NOISE_FLOOR = 1e-5


class ExportError(OrdnanceError):
    """The model cannot be exported, or failed the parity gate."""


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class ExportSettings:
    """How to export.

    Attributes:
        tile_size_px: Input side; default: the training tile size.
        batch: Fixed batch, or 0 for a dynamic batch dimension.
        max_detections: K rows per image in every output.
        overlap_px: Recommended scoring overlap written to the card (model pixels).
        parity_tiles: Validation tiles run through both runtimes (64: the int8 gate's recall drop is read off a
            few hundred items; on 16 tiles one or two items of a few dozen decided it).
        parity_data: data.yaml whose validation images are used; default: seeded synthetic scenes.
        min_matched: Share of PyTorch detections ONNX Runtime must reproduce (same label, every box edge
            within EDGE_TOLERANCE_PX), near-ties left out (choices won by less than NOISE_FACTOR times the
            largest score difference seen, at least NOISE_FLOOR, at most max_score_diff). An export with no
            detection left to compare is refused: it could not be checked.
        max_score_diff: Largest allowed score difference.
        parity_floor: Detections at or above this score are compared.
        int8: Also write a statically quantised (QDQ) model.
        int8_required: A refused int8 file fails the export (``ordnance export --int8``); otherwise the refusal is
            recorded in the report (``int8: {"refused": ...}``) and the float32 file stands alone (the default
            of ``ordnance export``: int8 wherever its gate passes).
        calibration: data.yaml whose training tiles calibrate int8 (never the tiles the gate checks);
            default: parity_data, else seeded synthetic scenes.
        calibration_method: How activation ranges are set: "minmax", "percentile" (99.999th) or "entropy".
        calibration_tiles: Tiles used to calibrate.
        int8_op_types: Operators quantised. Convolutions only by default: quantising the FPN's additions and
            upsampling as well cost the synthetic detector 0.026 recall at its threshold (0.868 -> 0.842 on
            64 validation tiles, 17% of detections reproduced) where convolutions alone cost none (0.886,
            89% reproduced), for 2.75x instead of 3.1x the float32 speed.
        max_recall_drop: Largest allowed int8 recall drop at the card's threshold.
        calibration_memory_bytes: Most memory int8 calibration may hold. onnxruntime's percentile and entropy
            calibrators keep every activation they calibrate, of every batch, until the end (an ensemble of three
            EfficientNet detectors on two views, 8 tiles of 768 px: about 27 GiB), and a
            process the kernel kills for memory leaves no verdict; int8 is refused with the estimate instead.
            Default: 60% of the memory available when calibration starts.
        test_flips: Views averaged inside the graph (1, 2 or 4; see ``CenterNet.flip_averaged``); default: the
            checkpoint's own (``model.test_flips``). A count other than the one its score threshold was validated
            with leaves the card's operating point "unknown".
        int8_float_outputs: Keep the convolutions that write the network's raw outputs (1x1 convolutions with
            at most ``max(num_classes, 4)`` output channels: class heatmap, size, offset) in float32. They cost
            little, and the heatmap logits decide the ranking at the threshold.
    """

    tile_size_px: int | None = None
    batch: int = 1
    max_detections: int = 300
    overlap_px: int | None = None
    parity_tiles: int = 64
    parity_data: str | None = None
    min_matched: float = 0.995
    max_score_diff: float = 1e-3
    parity_floor: float = 0.05
    int8: bool = False
    int8_required: bool = True
    calibration: str | None = None
    calibration_tiles: int = 32
    calibration_method: str = "minmax"
    max_recall_drop: float = 0.01
    calibration_memory_bytes: int | None = None
    int8_float_outputs: bool = True
    int8_op_types: tuple[str, ...] = ("Conv",)
    test_flips: int | None = None

    def __post_init__(self) -> None:
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(
                f"unknown calibration_method {self.calibration_method!r}; choose from {list(CALIBRATION_METHODS)}"
            )
        if self.int8 and self.calibration_tiles < self.batch:
            raise ValueError(f"calibration_tiles {self.calibration_tiles} is fewer than one batch of {self.batch}")


def load_task(checkpoint: Path):
    from ordnance.training.task import DetectionTask

    if not Path(checkpoint).is_file():
        raise ExportError("checkpoint does not exist", checkpoint)
    try:
        task = DetectionTask.load_from_checkpoint(str(checkpoint), map_location="cpu")
    except Exception as error:  # torch and Lightning raise many kinds for a file that is not a checkpoint
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise ExportError(f"not a Lightning checkpoint of an ordnance detector ({reason})", checkpoint) from None
    task.detector.to(memory_format=torch.contiguous_format)  # the graph is exported in NCHW
    return task.eval()


def _recipe_data(path: str) -> dict | None:
    """The ``data`` section of a training recipe (LightningCLI YAML), or None for a plain data.yaml."""
    import yaml

    try:
        meta = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    data = meta.get("data") if isinstance(meta, dict) else None
    return data if isinstance(data, dict) and "data_yaml" in data else None


def validation_tiles(n: int, tile_px: int, gsd_m: float, data_yaml: str | None, seed: int = 7, split: str = "valid"):
    """(images (n, 3, S, S) uint8, truth boxes per image): n of a dataset's validation split (its tiles with
    items first, then empty ones in order), n spread evenly through another ``split`` (int8 calibration reads
    "train"), or seeded synthetic scenes. All
    pass through :func:`pad_to_tile`, as the scorer's tiles do.

    ``data_yaml`` is a YOLO ``data.yaml``, or a training recipe whose ``data`` section names one: then its
    ``class_names``/``class_map`` apply and tiles are resampled from its ``source_gsd_m`` to the model's
    ``gsd_m`` (the recipe's when the model states none), so that parity and calibration see what the network
    sees in the field."""
    images, truth = [], []
    if data_yaml:
        from ordnance.datasets.gsd import load_at_gsd
        from ordnance.datasets.yolo import read_yolo

        recipe = _recipe_data(data_yaml) or {}
        source = recipe.get("data_yaml", data_yaml)
        data = read_yolo(
            source,
            split,
            class_names=recipe.get("class_names"),
            class_map=recipe.get("class_map"),
        )
        records = data.records
        if split != "valid" and len(records) > n:
            records = [records[i] for i in np.linspace(0, len(records) - 1, n).round().astype(int)]
        elif len(records) > n:
            # every tile with an item first (a real validation flight may hold a few items in hundreds of tiles,
            # and the int8 gate's recall is read off them), then empty ground in the split's order
            records = [r for r in records if (r.labels >= 0).any()] + [r for r in records if not (r.labels >= 0).any()]
        for record in records[:n]:
            sample = load_at_gsd(record, recipe.get("source_gsd_m"), (gsd_m or recipe.get("gsd_m")) if recipe else None)
            tile, _ = pad_to_tile(np.ascontiguousarray(sample.image.transpose(2, 0, 1)), tile_px)
            images.append(tile)
            keep = (sample.boxes[:, 0] < tile_px) & (sample.boxes[:, 1] < tile_px)
            truth.append(np.minimum(sample.boxes[keep], tile_px))
    else:
        from ordnance.datasets.synth.layout import make_scene
        from ordnance.datasets.synth.scene import render_block

        for i in range(n):
            spec = make_scene(900_000 + seed * 1000 + i, gsd_m or 0.01, tile_px, tile_px, patterns=2)
            image, boxes = render_block(spec, 0, 0, tile_px, tile_px)
            tile, _ = pad_to_tile(np.ascontiguousarray(image.transpose(2, 0, 1)), tile_px)
            images.append(tile)
            truth.append(np.array([b[:4] for b in boxes], np.float32).reshape(-1, 4))
    if not images:
        raise ExportError("no validation tiles found for the parity check", data_yaml)
    return np.stack(images), truth


def _export_graph(module: torch.nn.Module, path: Path, tile_px: int, batch: int) -> str:
    example = torch.randint(0, 255, (max(batch, 1), 3, tile_px, tile_px), dtype=torch.uint8)
    kwargs = {"input_names": [INPUT_NAME], "output_names": list(OUTPUT_NAMES), "opset_version": OPSET}
    try:
        dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=64)}} if batch == 0 else None
        torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=dynamic, **kwargs)
        exporter = "dynamo"
    except Exception as error:  # the dynamo exporter's failures are many; the legacy one is the fallback
        log.warning("dynamo export failed (%s); using the TorchScript exporter", str(error).splitlines()[0][:200])
        axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if batch == 0 else None
        torch.onnx.export(module, (example,), str(path), dynamo=False, dynamic_axes=axes, **kwargs)
        exporter = "torchscript"
    return f"{exporter} (torch {torch.__version__})"


def _simplify(path: Path) -> None:
    import onnxslim

    model = onnxslim.slim(onnx.load(str(path)))
    onnx.save(model, str(path))


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def _run_ort(session: ort.InferenceSession, images: np.ndarray, batch: int):
    step = batch or len(images)
    parts = [session.run(list(OUTPUT_NAMES), {INPUT_NAME: images[i : i + step]}) for i in range(0, len(images), step)]
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def _tolerance(truth: np.ndarray, floor_px: float) -> np.ndarray:
    """Each item's matching radius: half its longer side, at least ``floor_px``."""
    return np.maximum(np.max(truth[:, 2:] - truth[:, :2], axis=1) / 2, floor_px) if len(truth) else np.zeros(0)


def _recall(outputs, truth, threshold: float, floor_px: float = 4.0) -> float:
    boxes, scores, _ = outputs
    found = total = 0
    for b, s, t in zip(boxes, scores, truth):
        keep = s >= threshold
        tol = _tolerance(t, floor_px)
        m = match_points((b[keep, :2] + b[keep, 2:]) / 2, s[keep], (t[:, :2] + t[:, 2:]) / 2, tol)
        found += int(m.true_positive.sum())
        total += len(t)
    return found / max(total, 1)


def item_scores(outputs, truth, floor_px: float = 4.0) -> np.ndarray:
    """Each truth item's best score: the highest-scoring detection whose centre lies within the item's
    tolerance (half its longer side, at least ``floor_px``) of the item's centre, 0 where none does. Read
    for the same items from two runtimes, it shows how far each item moved against the threshold, which a
    recall at one threshold only shows for the items that cross it."""
    best = []
    for b, s, t in zip(outputs[0], outputs[1], truth):
        if not len(t):
            continue
        tol = _tolerance(t, floor_px)
        centres = (b[:, :2] + b[:, 2:]) / 2
        items = (t[:, :2] + t[:, 2:]) / 2
        near = np.linalg.norm(centres[None, :, :] - items[:, None, :], axis=2) <= tol[:, None]
        best.append(np.where(near, s[None, :], 0.0).max(axis=1, initial=0.0))
    return np.concatenate(best).astype(np.float64) if best else np.zeros(0)


def _score_distance(a: np.ndarray, b: np.ndarray, top: int = 50) -> float:
    """Largest distance from one list's top scores to the nearest score of the other, both ways."""
    a, b = np.sort(np.asarray(a, np.float64))[::-1], np.sort(np.asarray(b, np.float64))[::-1]
    if not len(a) or not len(b):
        return float(max(a[:top].max(initial=0.0), b[:top].max(initial=0.0)))  # scores with no counterpart at all
    return float(
        max(
            np.abs(a[:top, None] - b[None, :]).min(axis=1).max(),
            np.abs(b[:top, None] - a[None, :]).min(axis=1).max(),
        )
    )


def compare(
    reference,
    candidate,
    truth,
    threshold: float,
    floor: float,
    margins=None,
    tie: float = 0.0,
    min_iou: float | None = None,
) -> dict:
    """Parity of two runtimes' outputs on the same tiles: matched share (same label, every box edge within
    ``EDGE_TOLERANCE_PX`` or, when ``min_iou`` is given, IoU at least that), largest score difference, and
    recall at ``threshold`` of both.

    ``margins`` (as ``reference[1]``) says by how much score each reference detection won its discrete
    choices (which cell is the peak, which class, whether it makes the top K). Detections that won by less
    than the near-tie margin are choices another runtime may decide the other way at the same scores: they
    are counted as ``near_ties`` and left out of the matched share, whose denominator is
    ``detections_compared``. The margin is ``NOISE_FACTOR`` times the score noise, at least ``NOISE_FLOOR``
    and at most ``tie``: it follows the numerical noise actually seen, so an early model whose scores all lie
    within 1e-3 still has its clear choices compared.

    The score noise is the largest distance from any of one runtime's top-50 scores on a tile to the nearest
    score the other runtime gave on it, both ways. A detection only one runtime makes shows there unless another
    detection scored the same: the second of two cells tied for a peak, which one runtime keeps and the other
    drops, moves every lower score down one rank but leaves each score its counterpart, so a graph at parity is
    not refused for it.
    """
    noise = max(
        (_score_distance(rs, cs) for rs, cs in zip(reference[1], candidate[1]) if len(rs) or len(cs)),
        default=0.0,
    )
    tie = min(tie, max(NOISE_FACTOR * noise, NOISE_FLOOR))
    matched = total = ties = 0
    max_diff = noise
    matched_diff = 0.0
    for i, (rb, rs, rl, cb, cs, cl) in enumerate(zip(*reference, *candidate)):
        # Compare detections above the floor, or the top 20 when fewer clear it (an early model).
        cut = min(floor, float(np.sort(rs)[::-1][: min(20, len(rs))][-1])) if len(rs) else floor
        keep_r, keep_c = rs >= cut, cs >= cut - 1e-3
        if margins is not None:
            firm = margins[i] >= tie
            ties += int((keep_r & ~firm).sum())
            keep_r &= firm
        rb_, rs_, rl_ = rb[keep_r], rs[keep_r], rl[keep_r]
        cb_, cs_, cl_ = cb[keep_c], cs[keep_c], cl[keep_c]
        total += len(rb_)
        if len(rb_) and len(cb_):
            # Same box: every edge within EDGE_TOLERANCE_PX (IoU alone lets a large box move pixels and is
            # unstable for the sub-pixel boxes of an early model), or IoU >= min_iou where asked.
            edges = np.abs(rb_[:, None, :] - cb_[None, :, :]).max(axis=2)
            same = (edges <= EDGE_TOLERANCE_PX).astype(np.float64)
            if min_iou is not None:
                same = np.maximum(same, _iou(rb_, cb_) >= min_iou)
            score = (same - edges * 1e-6) * (rl_[:, None] == cl_[None])
            best = score.argmax(axis=1)
            ok = score[np.arange(len(rb_)), best] > 0.5
            matched += int(ok.sum())
            if ok.any():
                matched_diff = max(matched_diff, float(np.abs(rs_[ok] - cs_[best[ok]]).max()))
                max_diff = max(max_diff, matched_diff)
    return {
        "tiles": len(reference[0]),
        "detections_compared": total,
        "near_ties": ties,
        "near_tie_margin": tie if margins is not None else 0.0,
        "matched_share": matched / total if total else 0.0,
        "max_score_diff": max_diff,
        "score_noise": noise,
        "matched_score_diff": matched_diff,
        "recall_reference": _recall(reference, truth, threshold),
        "recall_candidate": _recall(candidate, truth, threshold),
        "threshold": threshold,
        **_item_shift(reference, candidate, truth, threshold),
    }


def _item_shift(reference, candidate, truth, threshold: float) -> dict:
    """How the truth items' own scores moved between the runtimes: how many items the recall figures rest on,
    the largest fall of an item's best score, and the lowest score the candidate gives an item the reference
    finds at the threshold (its margin above the threshold is what the next site's items have to lose)."""
    ref, cand = item_scores(reference, truth), item_scores(candidate, truth)
    found = ref >= threshold
    return {
        "items": int(len(ref)),
        "item_score_drop": float((ref - cand).max(initial=0.0)),
        "lowest_found_item_score": float(cand[found].min()) if found.any() else None,
    }


def _with_card(model: onnx.ModelProto, card: ModelCard) -> onnx.ModelProto:
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = CARD_KEY, card.to_json()
    return model


def _save_atomic(model: onnx.ModelProto, path: Path) -> None:
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def _run_info(checkpoint: Path) -> tuple[str, str]:
    """(MLflow run id, sha256 of the resolved config) from the run folder runs/<experiment>/<run>/."""
    run_dir = Path(checkpoint).resolve().parent.parent
    config = run_dir / "config.yaml"
    digest = hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else ""
    run_id = run_dir.name if len(run_dir.name) == 32 else ""
    return run_id, digest


def time_session(session: ort.InferenceSession, images: np.ndarray, batch: int, repeat: int = 3) -> float:
    """Median milliseconds per tile."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        _run_ort(session, images, batch)
        times.append((time.perf_counter() - start) / len(images) * 1000)
    return float(np.median(times))


def default_item_sizes(class_names: list[str]) -> dict[str, float]:
    """Typical item size per class in metres, from the synthetic catalogue (mean over item types)."""
    from ordnance.datasets.synth.items import CATALOG

    sizes: dict[str, list[float]] = {}
    for item in CATALOG.values():
        if item.label in class_names:
            sizes.setdefault(item.label, []).append(float(np.mean(item.length_mm)) / 1000)
    return {k: round(float(np.mean(v)), 3) for k, v in sizes.items()}


def export_checkpoint(checkpoint: str | Path, output: str | Path, settings: ExportSettings = ExportSettings()) -> dict:
    """Export a checkpoint to ``output`` (and ``output`` with ``.int8.onnx`` when asked).

    The file is written only when the parity gate passes; the parity report goes into the card and into
    ``<output>.parity.json``. Returns that report.

    Raises:
        ExportError: the detector cannot be exported in the contract, or parity failed.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    task = load_task(checkpoint)
    hp = task.hparams
    tile = settings.tile_size_px or hp.tile_size_px
    if tile % 32:
        raise ExportError(f"tile size {tile} is not a multiple of 32", checkpoint)
    threshold = float(task.operating_threshold)
    status = {1.0: "validated", 0.0: "fallback"}.get(float(getattr(task, "operating_validated", -1.0)), "unknown")
    trained_flips = int(hp.get("test_flips", 1))
    flips = trained_flips if settings.test_flips is None else int(settings.test_flips)
    if flips != trained_flips:
        try:
            task.set_test_flips(flips)
        except ValueError as error:
            raise ExportError(str(error), checkpoint) from None
        status = "unknown"  # the threshold was chosen on other maps than the graph's
        log.warning("%s: exported with %d views, its threshold was validated with %d", checkpoint, flips, trained_flips)
    if status != "validated":
        log.warning("%s: score threshold %.3f is a %s operating point", checkpoint, threshold, status)
    try:
        module = task.detector.export_module(settings.max_detections).eval()
    except ExportRefused as error:
        raise ExportError(f"{hp.model} cannot be exported: {error}", checkpoint) from None
    images, truth = validation_tiles(settings.parity_tiles, tile, hp.gsd_m, settings.parity_data)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        exporter = _export_graph(module, raw, tile, settings.batch)
        _simplify(raw)
        model = onnx.load(str(raw))
    onnx.checker.check_model(model)
    with torch.no_grad():
        reference = [t.numpy() for t in _torch_run(module, images, settings.batch)]
    margins = _selection_margins(task.detector, images, settings)
    candidate = _run_ort(_session(model), images, settings.batch)
    parity = compare(
        reference, candidate, truth, threshold, settings.parity_floor, margins, tie=settings.max_score_diff
    )
    log.info("fp32 parity: %s", parity)
    run_id, config_sha = _run_info(checkpoint)
    card = ModelCard(
        class_names=tuple(hp.class_names),
        tile_size_px=tile,
        gsd_m=float(hp.gsd_m),
        score_threshold=round(threshold, 6),
        operating_point=status,
        overlap_px=settings.overlap_px if settings.overlap_px is not None else min(tile // 4, 128),
        batch_size=settings.batch,
        max_detections=settings.max_detections,
        test_flips=flips,
        item_size_m=default_item_sizes(list(hp.class_names)),
        input_scaling=input_scaling(task.detector),
        # an ensemble names its members: "ensemble(centernet_resnet10_lite+centernet_resnet10_lite)"
        model_name=f"{hp.model}({'+'.join(hp.members)})" if hp.get("members") else hp.model,
        model_version=f"{checkpoint.stem}",
        weights_sha256=weights_sha256(task.detector),
        mlflow_run_id=run_id,
        config_sha256=config_sha,
        exporter=exporter,
        opset=OPSET,
        parity={"fp32": parity},
        lineage=task.lineage(),
    )
    report = {"fp32": parity, "card": json.loads(card.to_json())}
    failed = (
        parity["detections_compared"] == 0
        or parity["matched_share"] < settings.min_matched
        or parity["max_score_diff"] > settings.max_score_diff
    )
    write_json(output.with_suffix(".parity.json"), report | {"passed": not failed})
    if failed:
        raise ExportError(
            f"parity gate failed: {parity['matched_share']:.4f} of {parity['detections_compared']} detections "
            f"matched (need {settings.min_matched} of at least 1; {parity['near_ties']} near-ties left out), "
            f"max score difference {parity['max_score_diff']:.2e} (allowed {settings.max_score_diff:g}; matched"
            f" detections {parity['matched_score_diff']:.2e}, top-50 scores to their nearest counterpart"
            f" {parity['score_noise']:.2e})",
            output,
        )
    _save_atomic(_with_card(model, card), output)
    if settings.int8:
        try:
            report["int8"] = export_int8(output, card, images, truth, settings, hp.gsd_m)
        except ExportError as error:
            if settings.int8_required:
                raise
            log.warning("int8 not written: %s", error)
            report["int8"] = {"refused": str(error)}
        write_json(output.with_suffix(".parity.json"), report | {"passed": True})
    return report


def _selection_margins(detector: torch.nn.Module, images: np.ndarray, settings: ExportSettings):
    if not hasattr(detector, "selection_margins"):
        return None
    step = settings.batch or len(images)
    parts = [
        detector.selection_margins(torch.from_numpy(images[i : i + step]), settings.max_detections)
        for i in range(0, len(images), step)
    ]
    return torch.cat(parts).numpy()


def _torch_run(module: torch.nn.Module, images: np.ndarray, batch: int):
    step = batch or len(images)
    parts = [module(torch.from_numpy(images[i : i + step])) for i in range(0, len(images), step)]
    return tuple(torch.cat([p[j] for p in parts]) for j in range(3))


def output_convolutions(path: Path, max_channels: int) -> list[str]:
    """Names of the 1x1 Conv nodes with at most ``max_channels`` output channels (the heads' output layers)."""
    model = onnx.load(str(path))
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        shape = shapes.get(node.input[1])
        if shape is not None and len(shape) == 4 and shape[0] <= max_channels and shape[2:] == (1, 1):
            names.append(node.name)
    return names


def activation_bytes(path: Path, op_types: tuple[str, ...] | list[str]) -> int:
    """Bytes of one run's float activations a histogram calibrator records: every input and output of a node of
    ``op_types`` that is not a weight, with its shape known after shape inference (as onnxruntime's
    ``select_tensors_to_calibrate`` picks them)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    infos = {i.name: i for i in [*graph.value_info, *graph.output, *graph.input]}
    weights = {w.name for w in graph.initializer}
    names = {n for node in graph.node if node.op_type in op_types for n in [*node.input, *node.output]}
    total = 0
    for name in names - weights:
        tensor = infos[name].type.tensor_type if name in infos else None
        if tensor is None or tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        dims = [d.dim_value for d in tensor.shape.dim]
        if dims and all(d > 0 for d in dims):
            total += (4 if tensor.elem_type == onnx.TensorProto.FLOAT else 2) * int(np.prod(dims))
    return total


def available_memory_bytes() -> int:
    """Memory the kernel can give without swapping (Linux: MemAvailable), else free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def export_int8(fp32_path: Path, card: ModelCard, images: np.ndarray, truth, settings: ExportSettings, gsd_m):
    """Static QDQ quantisation calibrated on training tiles; its own parity report against fp32."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    calib, _ = validation_tiles(
        settings.calibration_tiles,
        card.tile_size_px,
        gsd_m,
        settings.calibration or settings.parity_data,
        seed=3,
        split="train",
    )
    batch = max(card.batch_size, 1)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{INPUT_NAME: calib[i : i + batch]} for i in range(0, len(calib) - batch + 1, batch)])

        def get_next(self):
            return next(self.items, None)

    out = fp32_path.with_suffix(".int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        batches = len(calib) // batch
        # percentile and entropy keep every batch's activations until the ranges are set; minmax keeps only each
        # tensor's reduced minimum and maximum
        held = 0 if settings.calibration_method == "minmax" else batches * activation_bytes(pre, settings.int8_op_types)
        budget = settings.calibration_memory_bytes
        if budget is None:
            budget = int(0.6 * available_memory_bytes())
        if held > budget:
            raise ExportError(
                f"int8 calibration ({settings.calibration_method}, {batches} batches of {batch}) would hold about"
                f" {held / 2**30:.1f} GiB of activations, over its budget of {budget / 2**30:.1f} GiB: use fewer"
                " --calibration-tiles or --calibration-method minmax",
                out,
            )
        staged = Path(tmp) / "int8.onnx"
        excluded = output_convolutions(pre, max(len(card.class_names), 4)) if settings.int8_float_outputs else []
        log.info("int8: %d output convolutions stay float32: %s", len(excluded), excluded)
        quantize_static(
            str(pre),
            str(staged),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights: on x86 CPUs without VNNI (AVX2, most field laptops) onnxruntime's uint8 x int8 kernels
            # add pairs of products in saturating 16-bit lanes, which full-range int8 weights overflow; the same
            # file then scores differently there than where it was exported (and than onnxruntime-web)
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(settings.int8_op_types),
            nodes_to_exclude=excluded,
            calibrate_method=methods[settings.calibration_method],
        )
        model = onnx.load(str(staged))
    fp32_session, int8_session = _session(str(fp32_path)), _session(model)
    reference = _run_ort(fp32_session, images, card.batch_size)
    candidate = _run_ort(int8_session, images, card.batch_size)
    parity = compare(reference, candidate, truth, card.score_threshold, settings.parity_floor, min_iou=0.9)
    parity["fp32_ms_per_tile"] = time_session(fp32_session, images[:8], card.batch_size)
    parity["int8_ms_per_tile"] = time_session(int8_session, images[:8], card.batch_size)
    parity["speedup"] = parity["fp32_ms_per_tile"] / parity["int8_ms_per_tile"]
    parity["calibration"] = {"method": settings.calibration_method, "tiles": len(calib) // batch * batch}
    drop = parity["recall_reference"] - parity["recall_candidate"]
    log.info("int8 parity: %s", parity)
    if drop > settings.max_recall_drop:
        raise ExportError(
            f"int8 recall drops {drop:.3f} at threshold {card.score_threshold:.3f} "
            f"(allowed {settings.max_recall_drop})",
            out,
        )
    int8_card = card.replace(quantization="int8-qdq", parity={**card.parity, "int8_vs_fp32": parity})
    _save_atomic(_with_card(model, int8_card), out)
    return parity


def register_in_mlflow(output: Path, report: dict, tracking_uri: str | None = None, name: str = "ordnance-detector"):
    """Log the ONNX file to its training run and register it as a model version, card fields as tags."""
    import mlflow
    from ordnance.training.tracking import default_tracking_uri

    card = report["card"]
    if not card.get("mlflow_run_id"):
        log.warning("%s: no MLflow run id known; not registered", output)
        return None
    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    try:
        client.get_run(card["mlflow_run_id"])
    except mlflow.exceptions.MlflowException:
        raise ExportError(
            f"written, but not registered: its training run {card['mlflow_run_id']} is not in the MLflow store "
            f"{uri} (set MLFLOW_TRACKING_URI to the store it was trained with, or pass --no-register)",
            output,
        ) from None
    client.log_artifact(card["mlflow_run_id"], str(output), "onnx")
    parity_file = output.with_suffix(".parity.json")
    if parity_file.exists():
        client.log_artifact(card["mlflow_run_id"], str(parity_file), "onnx")
    tags = {k: json.dumps(v) if isinstance(v, dict | list) else str(v) for k, v in card.items()}
    if len(tags.get("lineage", "")) > 5000:  # MLflow's tag limit; the card in the file keeps it whole
        lineage = card["lineage"]
        tags["lineage"] = json.dumps({k: lineage[k] for k in lineage if k != "runs"} | {"runs": len(lineage["runs"])})
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass  # already registered
    version = client.create_model_version(
        name, f"runs:/{card['mlflow_run_id']}/onnx/{output.name}", run_id=card["mlflow_run_id"], tags=tags
    )
    log.info("registered %s version %s", name, version.version)
    return version
