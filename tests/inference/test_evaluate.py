"""Mosaic-level evaluation on a scored synthetic raster with known hits, misses and false alarms."""

from __future__ import annotations

import json

import numpy as np
import pyogrio.raw
import pytest
import shapely
from click.testing import CliRunner
from helpers import gaussian_blobs
from ordnance.inference.cli.main import cli
from ordnance.inference.evaluate import evaluate_mosaic
from ordnance.inference.metrics import match_points, summarise
from ordnance.inference.scoring import ScoringJob, score

X0, Y0, GSD = 500000.0, 5600000.0, 0.01


def write_truth(path, centres_px, classes):
    xy = np.array([[X0 + (c + 0.5) * GSD, Y0 - (r + 0.5) * GSD] for c, r in centres_px])
    fields = [
        np.array(classes, object),
        np.full(len(xy), 0.12),
        np.array([c + 0.5 for c, _ in centres_px]),
        np.array([r + 0.5 for _, r in centres_px]),
    ]
    pyogrio.raw.write(
        path,
        shapely.to_wkb(shapely.points(xy)),
        field_data=fields,
        fields=["class", "size_m", "col", "row"],
        driver="GPKG",
        geometry_type="Point",
        crs="EPSG:32636",
    )
    return path


def test_counts_hits_misses_and_false_alarms(tmp_path, blob_model, write_geotiff):
    items = [(100, 100), (224, 300), (500, 224), (700, 500), (850, 120)]  # 224 lies on a seam (tile 256, overlap 64)
    decoys = [(300, 450), (620, 80)]
    missed = [(400, 560)]
    mosaic = write_geotiff(gaussian_blobs(620, 900, items + decoys))
    result = score(ScoringJob(inputs=(str(mosaic),), model=blob_model(256), out_dir=tmp_path / "out", progress=False))
    truth = write_truth(tmp_path / "truth.gpkg", items + missed, ["ap_mine"] * 6)
    report = evaluate_mosaic(result.outputs["gpkg"], truth, manifest=result.outputs["manifest"])
    overall = report["overall"]
    assert overall["n_truth"] == 6 and overall["n_pred"] == 7
    assert overall["recall"] == pytest.approx(5 / 6)
    assert overall["precision"] == pytest.approx(5 / 7)
    area = 900 * 620 * GSD**2 / 1e4
    assert report["area_ha"] == pytest.approx(area, rel=1e-6)
    assert overall["false_alarms_per_ha"] == pytest.approx(2 / area)
    assert overall["duplicate_rate"] == 0
    assert report["missed"][0]["x"] == pytest.approx(X0 + 400.5 * GSD)
    assert report["seams"]["items_near_seams"] >= 2
    runner = CliRunner()
    out = runner.invoke(cli, ["evaluate", str(result.outputs["gpkg"]), str(truth), "-o", str(tmp_path / "ev")])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["overall"]["recall"] == pytest.approx(5 / 6)
    assert "| all |" in (tmp_path / "ev" / "evaluation.md").read_text()


def test_duplicates_and_recall_at_false_alarm_rates():
    truth = np.array([[0.0, 0.0], [10.0, 0.0]])
    preds = np.array([[0.1, 0.0], [0.05, 0.0], [10.0, 0.1], [5.0, 5.0]])
    scores = np.array([0.9, 0.8, 0.4, 0.6])
    m = match_points(preds, scores, truth, 0.25)
    assert m.true_positive.tolist() == [True, False, True, False]
    assert m.duplicate.tolist() == [False, True, False, False]
    s = summarise([m], area_ha=1.0, fa_per_ha=(1.0, 2.0))
    assert s["recall"] == 1.0 and s["duplicate_rate"] == 0.5
    assert s["recall_at_1_fa_per_ha"] == 0.5  # the 2nd item comes only after two false alarms
    assert s["recall_at_2_fa_per_ha"] == 1.0


@pytest.fixture
def scored_run(tmp_path, blob_model, write_geotiff):
    items = [(100, 100), (500, 224)]
    mosaic = write_geotiff(gaussian_blobs(620, 900, [*items, (300, 450)]))
    result = score(ScoringJob(inputs=(str(mosaic),), model=blob_model(256), out_dir=tmp_path / "out", progress=False))
    return result, write_truth(tmp_path / "truth.gpkg", items, ["ap_mine"] * 2)


def test_csv_predictions_with_the_scanned_area_match_the_geopackage(scored_run, tmp_path):
    result, truth = scored_run
    area = 900 * 620 * GSD**2 / 1e4
    from_gpkg = evaluate_mosaic(result.outputs["gpkg"], truth)["overall"]
    out = CliRunner().invoke(cli, ["evaluate", str(result.outputs["csv"]), str(truth), "--area-ha", str(area), "-o",
                                   str(tmp_path / "ev")])  # fmt: skip
    assert out.exit_code == 0, out.output
    from_csv = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["overall"]
    assert from_csv["recall"] == from_gpkg["recall"] == 1.0
    assert from_csv["false_alarms_per_ha"] == pytest.approx(1 / area)


def _line_truth(path):
    line = shapely.linestrings([[X0, Y0 - 1], [X0 + 1, Y0 - 1]])
    pyogrio.raw.write(path, shapely.to_wkb(np.array([line])), field_data=[np.array(["ap_mine"], object)],
                      fields=["class"], driver="GPKG", geometry_type="LineString", crs="EPSG:32636")  # fmt: skip
    return path


def _empty_truth(path):
    pyogrio.raw.write(path, np.array([], object), field_data=[np.array([], object)], fields=["class"], driver="GPKG",
                      geometry_type="Point", crs="EPSG:32636")  # fmt: skip
    return path


@pytest.mark.parametrize(
    "case, words",
    [
        ("line", "points or polygons"),
        ("empty", "holds no items"),
        ("floor-nan", "--floor-m"),
        ("floor-negative", "--floor-m"),
        ("size-negative", "--size-factor"),
    ],
)
def test_bad_truth_or_tolerances_are_refused_in_one_line(scored_run, tmp_path, case, words):
    result, truth = scored_run
    args = ["evaluate", str(result.outputs["gpkg"])]
    if case == "line":
        args.append(str(_line_truth(tmp_path / "line.gpkg")))
    elif case == "empty":
        args.append(str(_empty_truth(tmp_path / "empty.gpkg")))
    else:
        args.append(str(truth))
        option, value = {"floor-nan": ("--floor-m", "nan"), "floor-negative": ("--floor-m", "-1"),
                         "size-negative": ("--size-factor", "-0.5")}[case]  # fmt: skip
        args += [option, value]
    out = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "ev")])
    assert out.exit_code != 0
    errors = [line for line in out.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and words in errors[0]
    assert not (tmp_path / "ev" / "evaluation.json").exists()


def test_frame_predictions_in_pixels_cannot_meet_map_truth(tmp_path, blob_model, write_geotiff):
    frame = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]), name="frame.tif", crs=None)
    result = score(ScoringJob(inputs=(str(frame),), model=blob_model(256), out_dir=tmp_path / "o", progress=False))
    truth = write_truth(tmp_path / "truth.gpkg", [(100, 100)], ["ap_mine"])
    out = CliRunner().invoke(cli, ["evaluate", str(result.outputs["csv"]), str(truth), "--area-ha", "1"])
    assert out.exit_code != 0 and "carry no CRS" in out.output
