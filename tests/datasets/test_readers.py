"""Readers on small data the tests make, on bad input, and on the shared thermal export."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import THERMAL
from ordnance.datasets.coco import read_coco, write_coco
from ordnance.datasets.records import DatasetError, load_record
from ordnance.datasets.splits import split_by_groups
from ordnance.datasets.yolo import read_yolo


def make_yolo(root: Path, labels: dict[str, str], names=("ap_mine", "uxo"), size=(64, 48)) -> Path:
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, text in labels.items():
        split, stem = name.split("/")
        cv2.imwrite(str(root / split / "images" / f"{stem}.png"), rng.integers(0, 255, (*size[::-1], 3), np.uint8))
        if text is not None:
            (root / split / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"path: .\ntrain: train/images\nval: valid/images\nnames: {list(names)}\n")
    return root / "data.yaml"


def test_yolo_boxes_in_pixels_and_negatives(tmp_path):
    data_yaml = make_yolo(tmp_path, {"train/a": "1 0.5 0.5 0.25 0.5\n0 0.1 0.1 0.2 0.2\n", "train/b": None})
    data = read_yolo(data_yaml, "train")
    assert [len(r.labels) for r in data.records] == [2, 0]
    sample = load_record(data.records[0])
    assert sample.image.shape == (48, 64, 3)
    np.testing.assert_allclose(sample.boxes, [[24, 12, 40, 36], [0, 0, 12.8, 9.6]], atol=1e-4)
    assert sample.labels.tolist() == [1, 0]


def test_yolo_duplicates_reported(tmp_path):
    data_yaml = make_yolo(tmp_path, {"train/a": "0 0.5 0.5 0.1 0.1\n"})
    img = tmp_path / "train" / "images" / "a.png"
    (tmp_path / "train" / "images" / "copy.png").write_bytes(img.read_bytes())
    data = read_yolo(data_yaml, "train")
    assert [[p.name for p in g] for g in data.duplicates] == [["a.png", "copy.png"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.9 0.5 0.4 0.2\n", "box outside the image"),
        ("5 0.5 0.5 0.1 0.1\n", "class 5"),
        ("0 0.5 0.5\n", "expected 'class cx cy w h'"),
        ("0 a b c d\n", "not numbers"),
    ],
)
def test_yolo_bad_labels_name_the_file(tmp_path, text, message):
    data_yaml = make_yolo(tmp_path, {"train/bad": text})
    with pytest.raises(DatasetError, match=message) as info:
        read_yolo(data_yaml, "train")
    assert "bad.txt" in str(info.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DatasetError, match="data.yaml does not exist"):
        read_yolo(tmp_path / "data.yaml")
    data_yaml = make_yolo(tmp_path, {"train/a": "0 0.5 0.5 0.1 0.1\n"})
    (tmp_path / "train" / "images" / "a.png").write_bytes(b"not a png")
    record = read_yolo(data_yaml, "train").records[0]
    with pytest.raises(DatasetError, match="a.png: image cannot be decoded"):
        load_record(record)
    with pytest.raises(DatasetError, match="unknown categories"):
        read_yolo(data_yaml, "train", class_names=["at_mine"])


def coco_file(tmp_path, annotations, categories=None):
    cv2.imwrite(str(tmp_path / "img.png"), np.full((40, 50, 3), 90, np.uint8))
    payload = {
        "images": [{"id": 1, "file_name": "img.png", "width": 50, "height": 40}],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "ap_mine"}, {"id": 2, "name": "uxo"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(payload))
    return path


def test_coco_round_trip_is_lossless(tmp_path):
    path = coco_file(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [3.25, 4.5, 10.125, 7.0]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 20, 5, 6]},
        ],
    )
    first = read_coco(path, class_names=["ap_mine", "uxo"])
    written = write_coco(first, tmp_path / "again.json")
    second = read_coco(written, class_names=["ap_mine", "uxo"])
    a, b = load_record(first.records[0]), load_record(second.records[0])
    np.testing.assert_allclose(a.boxes, [[3.25, 4.5, 13.375, 11.5], [30, 20, 35, 26]], atol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-9)
    assert a.labels.tolist() == b.labels.tolist() == [1, 0]
    assert second.class_names == first.class_names


def test_coco_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_coco(tmp_path / "none.json")
    outside = coco_file(tmp_path, [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [45, 30, 20, 5]}])
    with pytest.raises(DatasetError, match="annotation 7: box .* outside image"):
        read_coco(outside)
    unknown = coco_file(
        tmp_path,
        [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2]}],
        [{"id": 1, "name": "ap_mine"}, {"id": 3, "name": "bottle"}],
    )
    with pytest.raises(DatasetError, match="unknown category 'bottle'"):
        read_coco(unknown, class_names=["ap_mine"])
    empty = coco_file(tmp_path, [])
    assert [len(r.labels) for r in read_coco(empty).records] == [0]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DatasetError, match="broken.json: not valid JSON"):
        read_coco(tmp_path / "broken.json")


def _count_boxes(split: str) -> tuple[int, int]:
    """Independent count: lines of the label files."""
    images = list((THERMAL / split / "images").iterdir())
    boxes = sum(
        len([ln for ln in (THERMAL / split / "labels" / f"{p.stem}.txt").read_text().splitlines() if ln.strip()])
        for p in images
        if (THERMAL / split / "labels" / f"{p.stem}.txt").exists()
    )
    return len(images), boxes


@pytest.mark.skipif(not THERMAL.exists(), reason="../shared/data/thermal-landmines is not present")
def test_thermal_counts_and_zone_split():
    for split in ("train", "valid", "test"):
        data = read_yolo(THERMAL / "data.yaml", split)
        assert (len(data), data.box_count()) == _count_boxes(split)
    pooled = read_yolo(THERMAL / "data.yaml", ["train", "valid", "test"])
    train, val = split_by_groups(pooled, ["7", "9"])
    assert len(val) == 278 and val.box_count() == 307
    assert len(train) == 427
    assert not {r.group for r in train.records} & {"zone_7", "zone_9"}


def test_training_and_evaluation_read_the_same_boxes(tmp_path):
    """One reader for both: a polygon row becomes its bounds, a box a hair past the edge is clipped, in training
    records and in the frame truth that ``ordnance evaluate`` matches against."""
    from ordnance.inference.frames import load_frame_truth

    # 64 x 48 px; a triangle (0.1, 0.2) (0.3, 0.2) (0.2, 0.6); a box reaching 0.0005 past the right edge
    data_yaml = make_yolo(tmp_path, {"valid/a": "0 0.1 0.2 0.3 0.2 0.2 0.6\n1 0.9 0.5 0.201 0.2\n"})
    expected = np.array([[0.1 * 64, 0.2 * 48, 0.3 * 64, 0.6 * 48], [0.7995 * 64, 0.4 * 48, 64, 0.6 * 48]])
    record = read_yolo(data_yaml, "valid").records[0]
    np.testing.assert_allclose(np.asarray(record.boxes_norm) * [64, 48, 64, 48], expected, atol=1e-3)
    _, _, boxes, labels = load_frame_truth(data_yaml).images["a.png"]
    np.testing.assert_allclose(boxes, expected, atol=1e-3)
    assert labels.tolist() == record.labels.tolist() == [0, 1]

    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "valid/images/a.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "ap_mine"}, {"id": 2, "name": "uxo"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [50.0, 10.0, 14.4, 8.0]}],
    }))  # fmt: skip
    record = read_coco(coco).records[0]
    _, _, boxes, labels = load_frame_truth(coco).images["a.png"]
    np.testing.assert_allclose(np.asarray(record.boxes_norm) * [64, 48, 64, 48], [[50, 10, 64, 18]], atol=1e-6)
    np.testing.assert_allclose(boxes, [[50, 10, 64, 18]], atol=1e-6)
    assert labels.tolist() == record.labels.tolist() == [1]


@pytest.mark.parametrize(
    "row", ["0 0.5 0.5 0.4 0.4 0.1\n", "0 1.2 0.5 0.1 0.1\n", "0 0.5 0.5 0 0.1\n", "0.5 0.5 0.5 0.1 0.1\n"]
)
def test_training_and_evaluation_refuse_the_same_rows(tmp_path, row):
    from ordnance.inference.errors import InputError
    from ordnance.inference.frames import load_frame_truth

    data_yaml = make_yolo(tmp_path, {"valid/a": row})
    with pytest.raises(DatasetError, match="a.txt: line 1"):
        read_yolo(data_yaml, "valid")
    with pytest.raises(InputError, match="a.txt: line 1"):
        load_frame_truth(data_yaml)
