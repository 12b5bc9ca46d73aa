"""A reviewed scoring run as training data: confirmed candidates are boxes, rejected ones leave chips without a
box there, undecided ones are ignore regions and never the reason a chip is kept."""

from __future__ import annotations

import json

import numpy as np
import pyogrio.raw
import pytest
from click.testing import CliRunner
from helpers import gaussian_blobs
from ordnance.datasets.records import DatasetError
from ordnance.datasets.reviewed import ReviewedRun, read_reviewed_run, read_reviewed_runs
from ordnance.inference.cli.main import cli
from ordnance.inference.review import run_id

CLASSES = ["ap_mine", "at_mine", "uxo"]
CENTRES = [(40, 40), (100, 60), (200, 150), (330, 90), (420, 250), (60, 260)]


def _table(run):
    meta, _, _, fields = pyogrio.raw.read(run / "candidates.gpkg", layer="candidates")
    return dict(zip(meta["fields"], fields))


def _decide(run, statuses: dict[int, str]):
    table = _table(run)
    manifest = json.loads((run / "manifest.json").read_text())
    rows = [{"id": int(i), "review_status": statuses[int(i)], "run": run_id(manifest), "x": float(x), "y": float(y)}
            for i, x, y in zip(table["id"], table["x"], table["y"]) if int(i) in statuses]  # fmt: skip
    path = run.parent / "decisions.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": None, "properties": r} for r in rows]}))  # fmt: skip
    result = CliRunner().invoke(cli, ["review", "import", str(run), str(path)])
    assert result.exit_code == 0, result.output


@pytest.fixture
def scored(tmp_path, blob_model, write_geotiff):
    mosaic = write_geotiff(gaussian_blobs(300, 480, CENTRES), name="survey.tif")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(run),
                                      "--no-progress", "--no-review", "--score-threshold", "0.5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = _table(run)
    boxes = np.array([[float(v) for v in b.split(",")] for b in table["bbox_px"]])
    ids = {tuple(np.round((b[:2] + b[2:]) / 2 - 0.5).astype(int)): int(i) for b, i in zip(boxes, table["id"])}
    assert sorted(ids) == sorted(CENTRES)  # one candidate per blob
    return run, mosaic, {c: ids[c] for c in CENTRES}, dict(zip(table["id"].astype(int), boxes))


def test_decisions_become_boxes_hard_negatives_and_ignore_regions(scored):
    run, _, ids, boxes = scored
    confirmed, rejected, unreviewed = CENTRES[:2], CENTRES[2:5], CENTRES[5:]
    _decide(run, {ids[c]: "confirmed" for c in confirmed} | {ids[c]: "rejected" for c in rejected})
    train, val, summary = read_reviewed_run(ReviewedRun(str(run), chip_px=128, overlap_px=0, val_fraction=0.0),
                                            CLASSES)  # fmt: skip
    assert summary["decisions"] == {"confirmed": 2, "rejected": 3}
    assert summary["left_out"] == {"unsure": 0, "unreviewed": 1}
    chips = train.records + val.records
    seen = {c: 0 for c in CENTRES}
    for record in chips:
        x0, y0, w, h = record.window
        assert (w, h) == (128, 128)
        local = record.boxes_norm * [w, h, w, h] + [x0, y0, x0, y0]
        held = [c for c in CENTRES if x0 <= c[0] < x0 + w and y0 <= c[1] < y0 + h]
        assert set(held) & set(confirmed + rejected), "a chip is kept only for decisions"
        for c in held:
            seen[c] += 1
            box = boxes[ids[c]]
            match = [k for k, b in enumerate(local) if np.allclose(b, np.clip(box, [x0, y0] * 2, [x0 + w, y0 + h] * 2))]
            if c in confirmed:
                assert len(match) == 1 and record.labels[match[0]] == CLASSES.index("ap_mine")
            elif c in rejected:
                assert not match  # background there: a hard negative
            else:
                assert len(match) == 1 and record.labels[match[0]] == -1  # undecided: ignore region
    assert all(seen[c] >= 1 for c in confirmed + rejected)  # every decision is in a kept chip
    assert seen[unreviewed[0]] == 0  # its chip holds no decision, so it is not kept


def test_undecided_chips_never_validate(scored):
    run, _, ids, _ = scored
    _decide(run, {ids[c]: "rejected" for c in CENTRES[:5]} | {ids[CENTRES[5]]: "unsure"})
    spec = ReviewedRun(str(run), chip_px=64, overlap_px=0, block_px=64, val_fraction=0.5)
    _, val, summary = read_reviewed_run(spec, CLASSES)
    assert len(val) and all((r.labels >= 0).all() for r in val.records)
    x, y = CENTRES[5]
    assert not any(r.window[0] <= x < r.window[0] + 64 and r.window[1] <= y < r.window[1] + 64 for r in val.records)
    assert summary["chips"]["train"] + summary["chips"]["val"] >= 5


def test_runs_that_cannot_teach_are_refused(scored, tmp_path):
    run, mosaic, ids, _ = scored
    with pytest.raises(DatasetError, match="review import"):
        read_reviewed_run(ReviewedRun(str(run)), CLASSES)
    _decide(run, {ids[CENTRES[0]]: "confirmed"})
    with pytest.raises(DatasetError, match=r"confirmed classes \['ap_mine'\]"):
        read_reviewed_run(ReviewedRun(str(run)), ["uxo"])
    with pytest.raises(DatasetError, match="listed twice"):
        read_reviewed_runs([ReviewedRun(str(run)), ReviewedRun(str(run))], CLASSES)
    data = bytearray(mosaic.read_bytes())  # the image changed since it was scored
    data[-1] ^= 0xFF
    mosaic.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="changed since it was scored"):
        read_reviewed_run(ReviewedRun(str(run)), CLASSES)
    mosaic.unlink()
    with pytest.raises(DatasetError, match="no longer at"):
        read_reviewed_run(ReviewedRun(str(run)), CLASSES)
    with pytest.raises(DatasetError, match="not an 'ordnance score' output"):
        read_reviewed_run(ReviewedRun(str(tmp_path)), CLASSES)
