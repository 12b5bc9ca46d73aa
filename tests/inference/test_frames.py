"""Frame-dataset evaluation: frames scored by the real scorer, truth in YOLO and COCO form."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import gaussian_blobs
from ordnance.inference.cli.main import cli
from ordnance.inference.errors import InputError
from ordnance.inference.frames import FrameSettings, evaluate_frames, load_frame_truth

SIDE = 256
HALF = 4.0  # the blob model reports 8 px boxes centred on the peak pixel's centre
# (items with a blob, items without one (missed), decoy blobs without an item) per frame
FRAMES = {
    "a_Zone_7_frame.png": ([(40, 50), (200, 120)], [(128, 220)], []),
    "b_Zone_9_frame.png": ([(100, 100), (30, 230)], [], [(180, 40)]),
    "c_Zone_1_frame.png": ([], [], []),
}


@pytest.fixture
def frames(tmp_path):
    """A YOLO export (data.yaml, valid/images, valid/labels) of three PNG frames."""
    images, labels = tmp_path / "data" / "valid" / "images", tmp_path / "data" / "valid" / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for name, (items, missed, decoys) in FRAMES.items():
        background = np.full((SIDE, SIDE), 20, np.float32)
        data = gaussian_blobs(SIDE, SIDE, items, background=background)
        data = np.maximum(data, gaussian_blobs(SIDE, SIDE, decoys, peak=120.0, background=background))
        with rasterio.open(images / name, "w", driver="PNG", width=SIDE, height=SIDE, count=3, dtype="uint8") as dst:
            dst.write(data)
        lines = [
            f"0 {(c + 0.5) / SIDE:.6f} {(r + 0.5) / SIDE:.6f} {2 * HALF / SIDE:.6f} {2 * HALF / SIDE:.6f}"
            for c, r in items + missed
        ]
        (labels / name.replace(".png", ".txt")).write_text("\n".join(lines))
    yaml_path = tmp_path / "data" / "data.yaml"
    yaml_path.write_text("path: .\ntrain: train/images\nval: valid/images\nnc: 1\nnames: ['landmine']\n")
    return yaml_path


def _score(tmp_path, blob_model, paths):
    runner = CliRunner()
    out = tmp_path / "scored"
    args = ["score", *map(str, paths), "--model", str(blob_model(SIDE)), "-o", str(out), "--score-threshold", "0.2"]
    result = runner.invoke(cli, [*args, "--no-progress", "--no-review"])
    assert result.exit_code == 0, result.output
    return out


def test_scored_frames_against_yolo_truth(tmp_path, blob_model, frames):
    images = sorted((frames.parent / "valid" / "images").iterdir())
    out = _score(tmp_path, blob_model, images)
    report = evaluate_frames(out / "candidates.csv", frames)
    overall = report["overall"]
    assert report["frames"] == 3 and report["frames_with_items"] == 2
    assert overall["n_truth"] == 5 and overall["n_pred"] == 5
    assert overall["recall"] == pytest.approx(4 / 5)
    assert overall["precision"] == pytest.approx(4 / 5)
    assert overall["false_alarms_per_image"] == pytest.approx(1 / 3)
    # the decoy scores below every item: all four items come before the first false alarm
    assert overall["recall_at_0.1_fa_per_image"] == pytest.approx(4 / 5)
    # boxes coincide with the truth boxes: COCO AP50 is the recall reached at full precision (101-point)
    assert report["coco"]["ap50"] == pytest.approx(81 / 101, abs=1e-3)
    assert report["coco"]["ap50_95"] == pytest.approx(81 / 101, abs=1e-3)

    # the CLI writes the JSON and the table; a frame pattern narrows the frames (zone 7 only)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["evaluate", str(out / "candidates.gpkg"), str(frames), "-o", str(tmp_path / "ev"), "--frames", "Zone_7_"]
    )
    assert result.exit_code == 0, result.output
    zone7 = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert zone7["frames"] == 1
    assert zone7["overall"]["recall"] == pytest.approx(2 / 3)
    assert zone7["overall"]["false_alarms_per_image"] == 0
    assert "| all |" in (tmp_path / "ev" / "evaluation.md").read_text()


def test_coco_truth_and_coco_results(tmp_path, frames):
    truth = load_frame_truth(frames)
    coco = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "landmine"}]}
    results = []
    for image_id, (name, (w, h, boxes, _)) in enumerate(sorted(truth.images.items())):
        coco["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
        for box in boxes:
            xywh = [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "bbox": xywh})
            coco["annotations"][-1] |= {"category_id": 7, "area": xywh[2] * xywh[3], "iscrowd": 0}
            shifted = [xywh[0] + 2 * HALF, xywh[1], xywh[2], xywh[3]]  # one box width off: IoU 0, centre 8 px off
            results.append({"image_id": image_id, "bbox": shifted, "score": 0.9, "category_id": 7})
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (tmp_path / "results.json").write_text(json.dumps(results))
    report = evaluate_frames(tmp_path / "results.json", tmp_path / "coco.json")
    assert report["overall"]["n_truth"] == 5
    assert report["coco"]["ap50"] == pytest.approx(0.0)
    assert report["overall"]["recall"] == 0.0  # 8 px from the centre: outside max(4 px floor, half of 8 px)
    loose = evaluate_frames(tmp_path / "results.json", tmp_path / "coco.json", FrameSettings(floor_px=8.0))
    assert loose["overall"]["recall"] == 1.0


def test_bad_frame_inputs_name_the_file(tmp_path, blob_model, frames):
    (frames.parent / "valid" / "labels" / "a_Zone_7_frame.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(InputError, match="a_Zone_7_frame.txt: line 1: 4 values"):
        load_frame_truth(frames)
    stray = tmp_path / "stray.png"
    with rasterio.open(stray, "w", driver="PNG", width=SIDE, height=SIDE, count=3, dtype="uint8") as dst:
        dst.write(gaussian_blobs(SIDE, SIDE, [(50, 50)]))
    (frames.parent / "valid" / "labels" / "a_Zone_7_frame.txt").write_text("")
    out = _score(tmp_path, blob_model, [stray])
    result = CliRunner().invoke(cli, ["evaluate", str(out / "candidates.csv"), str(frames)])
    assert result.exit_code != 0
    assert "data.yaml: 1 scored frame(s) have no truth, e.g. stray.png" in result.output


def test_thermal_export_reads_as_frame_truth():
    from conftest import THERMAL

    if not THERMAL.exists():
        pytest.skip("../shared/data/thermal-landmines is not beside this checkout")
    truth = load_frame_truth(THERMAL / "data.yaml")
    assert truth.class_names == ("landmine",)
    assert len(truth.images) == 705
    assert sum(len(b) for _, _, b, _ in truth.images.values()) == 772
    zones = {k: v for k, v in truth.images.items() if "Zone_7_" in k or "Zone_9_" in k}
    assert (len(zones), sum(len(b) for _, _, b, _ in zones.values())) == (278, 307)
    w, h, boxes, _ = next(iter(truth.images.values()))
    assert (w, h) == (640, 640) and (boxes >= -1).all() and (boxes <= 641).all()
