"""The review loop from the command line: score, import decisions, fine-tune on them, export, score again.

A survey holds red discs (the items) and pale discs (the look-alikes) on dark ground; a blob detector scores it
and finds both. The parent is taught that every disc is an item (all confirmed), so it fires on both colours. A
simulated reviewer then answers from the survey's truth: red confirmed, pale rejected. The same fine-tune of the
parent runs on those decisions and, as the control, with the look-alikes left unreviewed (ignore regions: no loss
either way, so the control keeps the parent's view of them). The rejected look-alikes must score far lower than
the undecided ones and below the items, and the lineage must reach the card and the new run's manifest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
from click.testing import CliRunner
from ordnance.inference.cli.main import cli
from ordnance.inference.review import run_id
from ordnance.inference.session import open_session
from ordnance.training.export import ExportSettings, export_checkpoint, load_task, weights_sha256

pytestmark = pytest.mark.train
THRESHOLD = "0.25"  # the blob detector's score is the grey level: discs pass, the dark ground does not
RED, PALE = (255, 70, 50), (205, 205, 190)
ORIGIN = (500000.0, 5600000.0)


def _survey(path: Path, seed: int = 1) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 768 px GeoTIFF at 1 cm: 14 red and 14 pale discs (Gaussian, sigma 3 px) on dark noisy ground; their
    centres."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal((30, 45, 25), 4, (768, 768, 3)), 0, 255).astype(np.uint8)
    centres: list[tuple[int, int]] = []
    while len(centres) < 28:
        x, y = (int(v) for v in rng.integers(16, 752, 2))
        if all(abs(x - a) + abs(y - b) > 40 for a, b in centres):
            centres.append((x, y))
    yy, xx = np.mgrid[-10:11, -10:11]
    weight = np.exp(-(xx**2 + yy**2) / (2 * 3.0**2))[..., None]  # one peak per disc, as a lit object has
    for k, (x, y) in enumerate(centres):
        patch = image[y - 10 : y + 11, x - 10 : x + 11].astype(np.float32)
        colour = np.array(RED if k % 2 == 0 else PALE, np.float32)
        image[y - 10 : y + 11, x - 10 : x + 11] = (patch * (1 - weight) + colour * weight).astype(np.uint8)
    profile = dict(driver="GTiff", width=768, height=768, count=3, dtype="uint8", crs="EPSG:32636",
                   transform=from_origin(*ORIGIN, 0.01, 0.01))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image.transpose(2, 0, 1))
    xy = np.array(centres, float) + 0.5  # pixel centres
    return path, xy[0::2], xy[1::2]


def _score(mosaic: Path, model: Path, out: Path) -> dict:
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(model), "-o", str(out),
                                      "--score-threshold", THRESHOLD, "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    meta, _, _, fields = pyogrio.raw.read(out / "candidates.gpkg", layer="candidates")
    return dict(zip(meta["fields"], fields))


def _pixels(table: dict) -> np.ndarray:
    return np.c_[(np.asarray(table["x"]) - ORIGIN[0]) / 0.01, (ORIGIN[1] - np.asarray(table["y"])) / 0.01]


def _heat(ckpt: Path, mosaic: Path, places_px: np.ndarray) -> np.ndarray:
    """A checkpoint's heatmap score (any class, best cell within one cell) at each place of the mosaic, read
    densely so that it does not depend on which peaks made a top-K."""
    import rasterio
    import torch

    with rasterio.open(mosaic) as src:
        image = torch.from_numpy(src.read()).float()[None] / 255.0
    net = load_task(ckpt).detector.net
    with torch.no_grad():
        heat = torch.sigmoid(net(image)["heatmap"])[0].amax(0).numpy()
    cells = (places_px / net.stride).astype(int)
    return np.array([heat[r - 1 : r + 2, c - 1 : c + 2].max() for c, r in cells])


def _fine_tune(fit, tmp_path, name, parent, run: Path, *, export: bool = True) -> tuple[Path, Path | None]:
    root = tmp_path / name
    fit("--model.init_checkpoint", str(parent), "--trainer.max_steps", "80", "--trainer.max_epochs", "1000",
        "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(root), "--model.lr", "0.001",
        "--data.replay", "0.25", "--data.reviewed", json.dumps([{"run": str(run)}]))  # fmt: skip
    ckpt = next(root.glob("**/checkpoints/last.ckpt"))
    if not export:
        return ckpt, None
    out = tmp_path / f"{name}.onnx"
    export_checkpoint(ckpt, out, ExportSettings(parity_tiles=4))
    return ckpt, out


def _import(run: Path, table: dict, statuses: list[str | None], tmp_path: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    features = [{"type": "Feature", "geometry": None, "properties": {
        "id": int(table["id"][i]), "review_status": status, "run": run_id(manifest), "x": float(table["x"][i]),
        "y": float(table["y"][i])}} for i, status in enumerate(statuses) if status]  # fmt: skip
    decisions = tmp_path / f"{run.name}-decisions.geojson"
    decisions.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    result = CliRunner().invoke(cli, ["review", "import", str(run), str(decisions)])
    assert result.exit_code == 0, result.output


def test_decisions_teach_the_model_what_to_reject(fit, tmp_path, blob_model):
    fit("--trainer.max_steps", "4", "--trainer.default_root_dir", str(tmp_path / "base"))
    base = next((tmp_path / "base").glob("**/checkpoints/last.ckpt"))
    mosaic, red, pale = _survey(tmp_path / "survey.tif")

    run = tmp_path / "run"
    before = _score(mosaic, blob_model(256), run)
    xy = _pixels(before)
    near = np.linalg.norm(xy[:, None] - np.r_[red, pale][None], axis=2)
    assert (near.min(0) <= 6).all(), near.min(0)  # every disc is a candidate
    on_red = np.linalg.norm(xy[:, None] - red[None], axis=2).min(1) <= 6
    # the same run twice: the simulated reviewer confirms the red discs in both; in one it rejects everything
    # else, in the other it leaves everything else unreviewed (an ignore region, neither item nor background)
    undecided, everything = tmp_path / "run-undecided", tmp_path / "run-all-items"
    shutil.copytree(run, undecided)
    shutil.copytree(run, everything)
    _import(run, before, ["confirmed" if r else "rejected" for r in on_red], tmp_path)
    _import(undecided, before, ["confirmed" if r else None for r in on_red], tmp_path)
    _import(everything, before, ["confirmed"] * len(on_red), tmp_path)

    parent, _ = _fine_tune(fit, tmp_path, "parent", base, everything, export=False)
    taught_ckpt, taught = _fine_tune(fit, tmp_path, "taught", parent, run)
    control_ckpt, control = _fine_tune(fit, tmp_path, "control", parent, undecided)
    heat = {name: (_heat(ckpt, mosaic, red), _heat(ckpt, mosaic, pale))
            for name, ckpt in (("parent", parent), ("taught", taught_ckpt), ("control", control_ckpt))}  # fmt: skip
    median = {k: (float(np.median(r)), float(np.median(p))) for k, (r, p) in heat.items()}
    above = {name: float((r[:, None] > p[None]).mean()) for name, (r, p) in heat.items()}  # P(item > look-alike)
    assert min(median["parent"]) > 0.1, (median, above)  # the parent fires on both colours
    # the same steps on the same survey; only the rejections differ: they halve the look-alikes' scores at least,
    # and put them below the items
    assert median["taught"][1] < 0.5 * median["control"][1], (median, above)
    assert above["taught"] > 0.9, (median, above)

    rescored = tmp_path / "run-taught"
    _score(mosaic, taught, rescored)
    manifest = json.loads((run / "manifest.json").read_text())
    lineage = open_session(taught).card.lineage
    assert [r["run"] for r in lineage["runs"]] == [run_id(manifest)]
    assert lineage["decisions"] == {"confirmed": int(on_red.sum()), "rejected": int((~on_red).sum())}
    assert lineage["scored_by_sha256"] == [manifest["model"]["sha256"]]
    assert lineage["parent"]["weights_sha256"] == weights_sha256(load_task(parent).detector)
    assert json.loads((rescored / "manifest.json").read_text())["lineage"] == lineage
    assert open_session(control).card.lineage["decisions"] == {"confirmed": int(on_red.sum()), "rejected": 0}


def test_replay_draws_its_share_from_every_original_image(tiny_data, tmp_path, blob_model):
    """A fine-tune on a few reviewed chips draws ``replay`` of each epoch from all the original training images,
    not from a fixed handful of them."""
    from ordnance.datasets.datamodule import DetectionDataModule
    from ordnance.datasets.reviewed import REVIEW_GROUP, ReviewedRun

    mosaic, red, _ = _survey(tmp_path / "survey.tif")
    run = tmp_path / "run"
    table = _score(mosaic, blob_model(256), run)
    on_red = np.linalg.norm(_pixels(table)[:, None] - red[None], axis=2).min(1) <= 6
    first = np.flatnonzero(on_red)[:3]
    _import(run, table, ["confirmed" if i in first else None for i in range(len(on_red))], tmp_path)  # 3 decisions
    module = DetectionDataModule(str(tiny_data), class_names=["ap_mine", "at_mine", "uxo"], crop_px=256,
                                 tile_size_px=256, batch_size=2, num_workers=0,
                                 reviewed=[ReviewedRun(str(run), val_fraction=0.0)], replay=0.25)  # fmt: skip
    module.setup("fit")
    loader = module.train_dataloader()
    records = loader.dataset.data.records
    reviewed = np.array([r.group.startswith(REVIEW_GROUP) for r in records])
    originals = len(module._read_yolo(["train"]))
    assert 0 < reviewed.sum() < originals == (~reviewed).sum()  # every original image is in the pool
    drawn = np.array([i for _ in range(10) for i in loader.sampler])
    assert abs((~reviewed[drawn]).mean() - 0.25) < 0.05  # the replay share, over 10 epochs
    assert set(drawn[~reviewed[drawn]]) == set(np.flatnonzero(~reviewed))  # each original image drawn
