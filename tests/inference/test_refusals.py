"""Inputs the scorer refuses in one line, and settings it must make visible: score thresholds, operating points,
literal file names, frame GSDs, georeferenced and plain inputs mixed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import gaussian_blobs
from ordnance.inference.card import ModelCard
from ordnance.inference.cli.main import cli
from ordnance.inference.errors import ModelError


@pytest.mark.parametrize("value", ["2", "nan", "-1", "0", "inf"])
def test_impossible_score_threshold_is_refused(tmp_path, blob_model, write_geotiff, value):
    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out), "--score-threshold", value]
    )
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "--score-threshold" in lines[0] and "(0, 1]" in lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"score_threshold": float("nan")}, "score_threshold"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"class_names": "abc"}, "class_names"),
        ({"operating_point": "guessed"}, "operating_point"),
    ],
)
def test_cards_with_impossible_values_are_refused(change, message):
    raw = json.loads(ModelCard(class_names=("ap_mine",), tile_size_px=256, gsd_m=0.01).to_json())
    raw.update(change)
    with pytest.raises(ModelError, match=message):
        ModelCard.from_json(json.dumps(raw), "model.onnx")


@pytest.mark.parametrize("text", ["[1, 2]", '"card"', "{}"])
def test_cards_that_are_not_objects_or_lack_fields_are_refused(text):
    with pytest.raises(ModelError, match="model.onnx: model card"):
        ModelCard.from_json(text, "model.onnx")


def test_file_names_with_glob_characters_are_scored_as_named(tmp_path, blob_model, write_geotiff):
    # "a[1].tif" as a pattern would match "a1.tif", a different mosaic with two items.
    literal = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]), name="a[1].tif")
    write_geotiff(gaussian_blobs(300, 300, [(50, 50), (200, 200)]), name="a1.tif")
    from ordnance.inference.scoring import ScoringJob, score

    result = score(ScoringJob(inputs=(str(literal),), model=blob_model(256), out_dir=tmp_path / "o", progress=False))
    assert [i["path"] for i in result.manifest["inputs"]] == [str(literal.resolve())]
    assert len(result.candidates["x"]) == 1


def test_fallback_operating_point_is_written_in_the_manifest(tmp_path, blob_model, write_geotiff):
    from ordnance.inference.scoring import ScoringJob, score

    card = ModelCard(class_names=("ap_mine",), tile_size_px=256, gsd_m=0.01, overlap_px=64, operating_point="fallback")
    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]))
    result = score(ScoringJob(inputs=(str(mosaic),), model=blob_model(256, card=card), out_dir=tmp_path / "o"))
    assert result.manifest["settings"]["operating_point"] == "fallback"
    user = score(
        ScoringJob(inputs=(str(mosaic),), model=blob_model(256, card=card), out_dir=tmp_path / "u", score_threshold=0.2)
    )
    assert user.manifest["settings"]["operating_point"] == "user"
    assert np.isclose(user.manifest["settings"]["score_threshold"], 0.2)


@pytest.mark.parametrize("input_gsd_m, box_px", [(None, 8.0), (0.005, 16.0)])
def test_frames_with_a_stated_gsd_are_resampled_to_the_cards(tmp_path, blob_model, write_geotiff, input_gsd_m, box_px):
    # A frame with no georeferencing at 5 mm; the card says 1 cm. Stated, the frame is averaged down by 2 and the
    # blob model's 8 px boxes come back 16 frame pixels wide; unstated, nothing is resampled.
    from ordnance.inference.scoring import ScoringJob, score

    centres = [(120, 140), (400, 300)]
    frame = write_geotiff(gaussian_blobs(500, 600, centres, sigma=3.0), name="frame.tif", crs=None)
    job = ScoringJob(inputs=(str(frame),), model=blob_model(256), out_dir=tmp_path / "o", input_gsd_m=input_gsd_m)
    result = score(job)
    assert len(result.candidates["x"]) == 2
    widths = [float(b.split(",")[2]) - float(b.split(",")[0]) for b in result.candidates["bbox_px"]]
    np.testing.assert_allclose(widths, box_px, atol=0.6)
    for col, row in centres:
        assert np.hypot(result.candidates["x"] - (col + 0.5), result.candidates["y"] - (row + 0.5)).min() < 1.5
    assert ("given by --input-gsd-m" in result.manifest["inputs"][0]["gsd_check"]) == (input_gsd_m is not None)


def test_georeferenced_and_plain_inputs_in_one_job_are_refused(tmp_path, blob_model, write_geotiff):
    from ordnance.inference.errors import InputError
    from ordnance.inference.scoring import ScoringJob, score

    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]), name="mosaic.tif")
    frame = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]), name="frame.tif", crs=None)
    out = tmp_path / "o"
    with pytest.raises(InputError, match=r"frame\.tif: is not georeferenced but mosaic\.tif is"):
        score(ScoringJob(inputs=(str(mosaic), str(frame)), model=blob_model(256), out_dir=out, progress=False))
    assert not out.exists() or not any(out.rglob("*.gpkg"))


@pytest.mark.parametrize(
    "crs, step, origin, expected_gsd",
    [
        # UTM 36N: the grid is the ground (within the projection's 0.04% scale).
        ("EPSG:32636", 0.01, (500000.0, 5600000.0), 0.01),
        # Web Mercator at 50 N: 1 cm on the ground is 1 / cos(50 deg) = 1.556 cm of grid.
        ("EPSG:3857", 0.01 / np.cos(np.radians(50)), (3339584.7, 6446275.8), 0.01),
        # Degrees at 50 N: 1 cm is 9.0e-8 deg of latitude and 1.4e-7 deg of longitude (WGS84 radii).
        ("EPSG:4326", None, (30.0, 50.0), 0.01),
    ],
)
def test_gsd_and_area_are_measured_on_the_ground_in_any_crs(
    tmp_path, blob_model, write_geotiff, crs, step, origin, expected_gsd
):
    from affine import Affine
    from ordnance.inference.scoring import ScoringJob, score

    if step is None:  # metres per degree at 50 N from the ellipsoid's meridian and prime-vertical radii
        a, e2, phi = 6378137.0, 0.00669437999014, np.radians(50)
        m = a * (1 - e2) / (1 - e2 * np.sin(phi) ** 2) ** 1.5 * np.pi / 180
        n = a / np.sqrt(1 - e2 * np.sin(phi) ** 2) * np.cos(phi) * np.pi / 180
        transform = Affine(0.01 / n, 0, origin[0], 0, -0.01 / m, origin[1])
    else:
        transform = Affine(step, 0, origin[0], 0, -step, origin[1])
    mosaic = write_geotiff(gaussian_blobs(400, 400, [(100, 100), (300, 250)]), crs=crs, transform=transform)
    result = score(ScoringJob(inputs=(str(mosaic),), model=blob_model(256), out_dir=tmp_path / "o", progress=False))
    entry = result.manifest["inputs"][0]
    assert entry["gsd_m"] == pytest.approx(expected_gsd, rel=0.01)
    assert "resampled" not in entry["gsd_check"]
    assert result.manifest["area_scanned_ha"] == pytest.approx(400 * 400 * 0.01**2 / 1e4, rel=0.02)
    np.testing.assert_allclose(result.candidates["width_m"], 0.08, rtol=0.02)
    assert len(result.candidates["x"]) == 2


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--overlap-px", "600", "overlap must be 0 to half"),
        ("--overlap-px", "-5", "overlap must be 0 to half"),
        ("--threads", "1000", "threads must be 0"),
        ("--threads", "-1", "threads must be 0"),
        ("--max-tiles", "-3", "at least 1"),
        ("--max-tiles", "0", "at least 1"),
        ("--batch-size", "-2", "0 (the graph's batch)"),
        ("--gsd-tolerance", "-0.1", "[0, 1)"),
    ],
)
def test_settings_that_would_be_silently_changed_are_refused(tmp_path, blob_model, write_geotiff, option, value, words):
    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out), option, value]
    )
    assert result.exit_code != 0
    errors = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and option in errors[0] and words in errors[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_hard_link_to_the_same_mosaic_is_scored_once(tmp_path, blob_model, write_geotiff):
    import os

    from ordnance.inference.scoring import ScoringJob, score

    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]), name="a.tif")
    os.link(mosaic, tmp_path / "b.tif")
    job = ScoringJob(inputs=(str(mosaic), str(tmp_path / "b.tif")), model=blob_model(256), out_dir=tmp_path / "o")
    result = score(job)
    assert len(result.manifest["inputs"]) == 1 and len(result.candidates["x"]) == 1


def test_nan_pixels_are_no_data_even_without_a_nodata_tag(tmp_path, blob_model, write_geotiff):
    from ordnance.inference.scoring import ScoringJob, score

    data = gaussian_blobs(300, 400, [(100, 100), (300, 150)]).astype(np.float32)
    data[:, :, 200:] = np.nan  # the right half holds nothing: no item, no area
    mosaic = write_geotiff(data, name="float.tif")
    result = score(ScoringJob(inputs=(str(mosaic),), model=blob_model(256), out_dir=tmp_path / "o", progress=False))
    assert result.manifest["area_scanned_ha"] == pytest.approx(300 * 200 * 0.01**2 / 1e4, rel=0.01)
    assert len(result.candidates["x"]) == 1
    assert result.candidates["x"][0] == pytest.approx(500000.0 + 100.5 * 0.01, abs=0.011)


def test_a_plain_run_prints_no_info_lines_and_an_error_is_the_last_line(tmp_path, blob_model, write_geotiff):
    import subprocess
    import sys
    from pathlib import Path

    ordnance = str(Path(sys.executable).with_name("ordnance"))
    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]))
    model = str(blob_model(256))
    quiet = subprocess.run([ordnance, "score", str(mosaic), "--model", model, "-o", str(tmp_path / "a"),
                            "--no-progress"], capture_output=True, text=True)  # fmt: skip
    assert quiet.returncode == 0
    assert not [line for line in quiet.stderr.splitlines() if line.startswith("INFO") or "Warning:" in line]
    verbose = subprocess.run([ordnance, "-v", "score", str(mosaic), "--model", model, "-o", str(tmp_path / "b"),
                              "--no-progress"], capture_output=True, text=True)  # fmt: skip
    assert "INFO ordnance.inference.outputs: 1 candidates" in verbose.stderr
    missing = str(tmp_path / "nope.tif")
    failed = subprocess.run([ordnance, "score", missing, "--model", model, "-o", str(tmp_path / "c")],
                            capture_output=True, text=True)  # fmt: skip
    assert failed.returncode != 0 and failed.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'nope.tif'}: file does not exist"
    ]


def _float_input_model(path, card):
    import onnx
    from onnx import TensorProto, helper
    from ordnance.inference.card import CARD_KEY

    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node(
            "Constant", [], ["boxes"], value=helper.make_tensor("b", TensorProto.FLOAT, [1, 1, 4], [0] * 4)
        ),
        helper.make_node("Reshape", ["peak", "shape"], ["scores"]),
        helper.make_node("Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [2], [1, 1])),
        helper.make_node("Constant", [], ["labels"], value=helper.make_tensor("l", TensorProto.INT64, [1, 1], [0])),
    ]
    graph = helper.make_graph(
        [nodes[1], nodes[3], nodes[4], nodes[0], nodes[2]],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info(n, t, None) for n, t in
         (("boxes", TensorProto.FLOAT), ("scores", TensorProto.FLOAT), ("labels", TensorProto.INT64))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("case, words", [
    ("float-input", "not the contract's tensor(uint8)"),
    ("tile-size", "does not take the card's (N, 3, 512, 512)"),
    ("band-zero", "numbered from 1"),
])  # fmt: skip
def test_models_that_break_the_contract_are_refused(tmp_path, blob_model, case, words):
    from ordnance.inference.session import open_session

    card = ModelCard(class_names=("ap_mine",), tile_size_px=256, gsd_m=0.01, overlap_px=64)
    if case == "float-input":
        path = _float_input_model(tmp_path / "f.onnx", card)
    elif case == "tile-size":
        path = blob_model(256, card=card.replace(tile_size_px=512, overlap_px=64))
    else:
        raw = json.loads(card.to_json()) | {"band_order": [0, 1, 2]}
        with pytest.raises(ModelError, match=words):
            ModelCard.from_json(json.dumps(raw), "m.onnx")
        return
    with pytest.raises(ModelError, match=words.replace("(", r"\(").replace(")", r"\)")):
        open_session(path)


def test_outputs_of_an_earlier_run_that_this_run_does_not_write_are_removed(tmp_path, blob_model, write_geotiff):
    from ordnance.inference.scoring import ScoringJob, score

    first = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]), name="first.tif")
    second = write_geotiff(gaussian_blobs(300, 300, [(50, 50), (200, 200)]), name="second.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(first), "--model", str(blob_model(256)), "-o", str(out)])
    assert result.exit_code == 0 and (out / "review.html").exists() and (out / "candidates.kml").exists()
    rerun = score(ScoringJob(inputs=(str(second),), model=blob_model(256), out_dir=out, formats=("csv",)))
    assert sorted(p.name for p in out.iterdir()) == ["candidates.csv", "manifest.json"]
    assert set(rerun.manifest["removed_stale"]) == {
        "candidates.gpkg", "candidates.geojson", "candidates.kml", "review.html", "review_files", "review_preview.npz"
    }  # fmt: skip
    assert len((out / "candidates.csv").read_text().splitlines()) == 3  # header and the second mosaic's two items


def test_a_model_returning_classes_its_card_does_not_name_is_refused_before_any_output(
    tmp_path, blob_model, write_geotiff
):
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(blob_model(256))
    graph = model.graph
    mul = next(n for n in graph.node if n.op_type == "Mul" and n.output[0] == "labels")
    mul.output[0] = "labels0"
    graph.node.append(helper.make_node("Add", ["labels0", "three"], ["labels"]))
    graph.node.insert(0, helper.make_node("Constant", [], ["three"],
                                          value=helper.make_tensor("t", TensorProto.INT64, [], [3])))  # fmt: skip
    path = tmp_path / "three.onnx"
    onnx.save(model, path)
    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(path), "-o", str(out), "--no-progress"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"Error: {path}: returns class id 3, but its card names 1 classes ['ap_mine']"
    ]
    assert not (out / "manifest.json").exists() and not (out / "candidates.gpkg").exists()
