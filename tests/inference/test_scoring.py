"""End-to-end scoring with a deterministic blob-finding ONNX model on synthetic GeoTIFFs."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner
from helpers import gaussian_blobs
from ordnance.inference.cli.main import cli
from ordnance.inference.errors import InputError, ModelError, OutputError
from ordnance.inference.grid import tile_grid
from ordnance.inference.scoring import ScoringJob, score
from pyproj import Transformer

TILE, OVERLAP = 256, 64
W, H = 900, 620
X0, Y0, GSD = 500000.0, 5600000.0, 0.01


def planted_centres():
    """Blob centres (col, row): on seams (overlap middles), inside overlaps, at raster edges, interior."""
    grid = tile_grid(W, H, TILE, OVERLAP)
    seams_x = sorted({int(t.core[2]) for t in grid if t.core[2] < W})
    seams_y = sorted({int(t.core[3]) for t in grid if t.core[3] < H})
    centres = [
        (seams_x[0], 100),
        (seams_x[1], 300),
        (150, seams_y[0]),
        (seams_x[0], seams_y[0]),
        (seams_x[0] + 20, 500),
        (seams_x[0] - 20, 40),
        (1, 200),
        (W - 2, 333),
        (444, 1),
        (620, H - 2),
        (80, 80),
        (700, 250),
    ]
    return centres


def run_job(tmp_path, model, mosaic, **kw):
    job = ScoringJob(inputs=(str(mosaic),), model=model, out_dir=tmp_path / "out", progress=False, **kw)
    return score(job)


@pytest.fixture
def scene(blob_model, write_geotiff):
    centres = planted_centres()
    mosaic = write_geotiff(gaussian_blobs(H, W, centres))
    return blob_model(TILE), mosaic, centres


def test_each_item_once_at_its_map_position(tmp_path, scene):
    model, mosaic, centres = scene
    result = run_job(tmp_path, model, mosaic)
    table = result.candidates
    assert len(table["x"]) == len(centres)
    truth_x = np.array([X0 + (c + 0.5) * GSD for c, _ in centres])
    truth_y = np.array([Y0 - (r + 0.5) * GSD for _, r in centres])
    for x, y in zip(truth_x, truth_y):
        distance = np.hypot(table["x"] - x, table["y"] - y)
        assert (distance < GSD / 2).sum() == 1, (x, y, distance.min())
    lon, lat = Transformer.from_crs(32636, 4326, always_xy=True).transform(table["x"], table["y"])
    np.testing.assert_allclose(table["lon"], lon, atol=1e-9)
    np.testing.assert_allclose(table["lat"], lat, atol=1e-9)
    assert result.manifest["area_scanned_ha"] == pytest.approx(W * H * GSD**2 / 1e4, rel=1e-6)


def test_outputs_read_back(tmp_path, scene):
    model, mosaic, centres = scene
    result = run_job(tmp_path, model, mosaic)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "candidates.gpkg",
            "candidates.geojson",
            "candidates.csv",
            "candidates.kml",
            "manifest.json",
            "review_preview.npz",
        ]
    )
    assert sorted(pyogrio.list_layers(out / "candidates.gpkg")[:, 0]) == ["candidates", "coverage", "layer_styles"]
    gpkg = pyogrio.read_info(out / "candidates.gpkg", layer="candidates")
    assert gpkg["features"] == len(centres) and "32636" in gpkg["crs"]
    _, geoms, fields, names = _read(out / "candidates.gpkg", "candidates")
    assert {
        "class",
        "score",
        "lon",
        "lat",
        "x",
        "y",
        "crs",
        "bbox_px",
        "width_m",
        "height_m",
        "gsd_m",
        "source",
        "model_name",
        "model_version",
        "model_sha256",
        "processed_utc",
        "review_status",
    } <= set(names)
    _, _, cover_fields, _ = _read(out / "candidates.gpkg", "coverage")
    assert cover_fields[0][0] == pytest.approx(W * H * GSD**2 / 1e4, rel=1e-6)
    _, geoms, fields, names = _read(out / "candidates.geojson", None)
    import shapely

    points = shapely.from_wkb(geoms)
    lons, lats = shapely.get_x(points), shapely.get_y(points)
    assert np.all((lons > 30) & (lons < 36)) and np.all((lats > 50) & (lats < 51))
    assert np.all(np.asarray(fields[names.index("review_status")]) == "unreviewed")
    with open(out / "candidates.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(centres)
    assert list(rows[0])[:9] == ["id", "class", "score", "lon", "lat", "x", "y", "crs", "epsg"]
    assert rows[0]["epsg"] == "32636" and rows[0]["class"] == "ap_mine"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"ap_mine": len(centres)}
    assert manifest["inputs"][0]["sha256"] and json.loads(manifest["model"]["card"])["model_name"] == "blobnet"
    assert result.complete


def _read(path, layer):
    meta, _, geoms, fields = pyogrio.raw.read(path, layer=layer)
    return meta, geoms, fields, list(meta["fields"])


def test_resume_equals_uninterrupted(tmp_path, scene):
    model, mosaic, _ = scene
    whole = run_job(tmp_path / "a", model, mosaic).candidates
    first = run_job(tmp_path / "b", model, mosaic, max_tiles=3)
    assert not first.complete
    assert not (tmp_path / "b" / "out" / "candidates.gpkg").exists()
    second = run_job(tmp_path / "b", model, mosaic)
    assert second.complete
    for name in whole:
        if name != "processed_utc":
            np.testing.assert_array_equal(whole[name], second.candidates[name], err_msg=name)
    assert not (tmp_path / "b" / "out" / ".ordnance-partial").exists()
    # the review page's overview and chips, cut as the windows were scored, are the same too
    with np.load(tmp_path / "a" / "out" / "review_preview.npz") as a, np.load(tmp_path / "b" / "out" /
                                                                              "review_preview.npz") as b:  # fmt: skip
        assert sorted(a.files) == sorted(b.files) and len(a["chip_ids"]) > 0
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert a["overview_0"].max() > 0  # filled, not the zeros it starts from


def test_nodata_tiles_skipped_and_batches(tmp_path, blob_model, write_geotiff):
    data = gaussian_blobs(H, W, [(100, 100), (800, 500)])
    data[:, :, 450:] = 7  # right half nodata
    mosaic = write_geotiff(data, nodata=7)
    result = run_job(tmp_path, blob_model(TILE, batch=2), mosaic)
    assert len(result.candidates["x"]) == 1
    assert result.manifest["tiles_skipped"] >= 2
    assert result.manifest["area_scanned_ha"] == pytest.approx(450 * H * GSD**2 / 1e4, rel=0.01)


def test_coverage_is_the_ground_that_held_data(tmp_path, blob_model, write_geotiff):
    """An orthomosaic's edge is rarely a window boundary: beyond a slanted footprint edge the raster holds no data.
    The coverage layer (what the run reports as scanned, and what false alarms per ha divide by) must follow the
    data, not the windows that touched it."""
    import shapely

    data = gaussian_blobs(H, W, [(100, 100), (800, 100), (300, 500)])
    cols, rows = np.meshgrid(np.arange(W), np.arange(H))
    no_data = cols > rows + 350  # a wedge across several windows' cores, as beyond a flight's footprint
    data[:, no_data] = 7
    mosaic = write_geotiff(data, nodata=7)
    result = run_job(tmp_path, blob_model(TILE), mosaic)
    valid_ha = (~no_data).sum() * GSD**2 / 1e4
    assert result.manifest["area_scanned_ha"] == pytest.approx(valid_ha, rel=0.01)
    _, geoms, fields, _ = _read(tmp_path / "out" / "candidates.gpkg", "coverage")
    cover = shapely.from_wkb(geoms[0])
    assert cover.area / 1e4 == pytest.approx(valid_ha, rel=0.01)
    assert fields[0][0] == pytest.approx(valid_ha, rel=0.01)
    corner = (X0 + (W - 5) * GSD, Y0 - 5 * GSD)  # deep in the wedge, inside a window that scored data
    assert not cover.contains(shapely.Point(corner))
    assert cover.contains(shapely.Point(X0 + 5 * GSD, Y0 - (H - 5) * GSD))
    # the blob at (800, 100) lies in the wedge: no candidate there
    assert np.hypot(result.candidates["x"] - (X0 + 800.5 * GSD), result.candidates["y"] - (Y0 - 100.5 * GSD)).min() > 1
    assert len(result.candidates["x"]) == 2


def test_gsd_mismatch_resamples(tmp_path, blob_model, write_geotiff):
    # Mosaic at 0.5 cm; model at 1 cm: windows of 512 source px are resampled to 256.
    centres = [(101, 101), (601, 401), (1201, 1001)]
    mosaic = write_geotiff(gaussian_blobs(1300, 1400, centres, sigma=3.0), gsd_m=0.005)
    result = run_job(tmp_path, blob_model(TILE), mosaic)
    assert "resampled" in result.manifest["inputs"][0]["gsd_check"]
    assert len(result.candidates["x"]) == 3
    for col, row in centres:
        x, y = X0 + (col + 0.5) * 0.005, Y0 - (row + 0.5) * 0.005
        assert np.hypot(result.candidates["x"] - x, result.candidates["y"] - y).min() < 0.011


@pytest.mark.parametrize("mosaic_gsd", [0.005, 0.02])
def test_mosaic_at_half_and_twice_the_cards_gsd_is_resampled_to_it(tmp_path, blob_model, write_geotiff, mosaic_gsd):
    # The card says 1 cm. A 0.5 cm mosaic is averaged down by 2, a 2 cm mosaic enlarged by 2: positions stay on
    # the map to well under a mosaic pixel, and box sizes on the ground are the model's (8 px at 1 cm).
    centres = [(101, 101), (301, 251), (555, 444), (40, 600)]
    sigma = 3.0 if mosaic_gsd < 0.01 else 1.0
    mosaic = write_geotiff(gaussian_blobs(650, 700, centres, sigma=sigma), gsd_m=mosaic_gsd)
    result = run_job(tmp_path, blob_model(TILE), mosaic)
    note = result.manifest["inputs"][0]["gsd_check"]
    assert f"resampled x{mosaic_gsd / 0.01:.3f}" in note
    assert len(result.candidates["x"]) == len(centres)
    for col, row in centres:
        x, y = X0 + (col + 0.5) * mosaic_gsd, Y0 - (row + 0.5) * mosaic_gsd
        assert np.hypot(result.candidates["x"] - x, result.candidates["y"] - y).min() < 0.6 * max(mosaic_gsd, 0.01)
    np.testing.assert_allclose(result.candidates["width_m"], 0.08, atol=0.01)


def test_uint16_four_bands(tmp_path, blob_model, write_geotiff):
    rgb = gaussian_blobs(300, 300, [(150, 150)]).astype(np.uint16) * 16
    data = np.concatenate([rgb, np.full((1, 300, 300), 4000, np.uint16)])
    mosaic = write_geotiff(data)
    result = run_job(tmp_path, blob_model(TILE), mosaic)
    assert len(result.candidates["x"]) == 1


def test_frames_without_crs_get_pixel_coordinates(tmp_path, blob_model, write_geotiff):
    import rasterio

    data = gaussian_blobs(240, 320, [(50, 60), (300, 200)])
    frames = tmp_path / "frames"
    frames.mkdir()
    with rasterio.open(frames / "f1.png", "w", driver="PNG", width=320, height=240, count=3, dtype="uint8") as d:
        d.write(data)
    result = score(ScoringJob(inputs=(str(frames),), model=blob_model(TILE), out_dir=tmp_path / "o", progress=False))
    table = result.candidates
    assert sorted(zip(table["x"].round(1), table["y"].round(1))) == [(50.5, 60.5), (300.5, 200.5)]
    assert set(table["crs"]) == {"pixel"}


def test_bad_inputs_clear_errors(tmp_path, blob_model, write_geotiff):
    model = blob_model(TILE)
    with pytest.raises(InputError, match="does not exist"):
        run_job(tmp_path, model, tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputError, match="not a readable raster"):
        run_job(tmp_path, model, text)
    good = write_geotiff(gaussian_blobs(600, 600, [(5, 5)]), name="whole.tif")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(InputError, match="truncated.tif"):
        run_job(tmp_path, model, truncated)
    one_band = write_geotiff(np.zeros((1, 100, 100), np.uint8), name="grey.tif")
    with pytest.raises(InputError, match="1 band"):
        run_job(tmp_path, model, one_band)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(model.read_bytes()[:200])
    with pytest.raises(ModelError, match="corrupt.onnx"):
        run_job(tmp_path, corrupt, good)
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    with pytest.raises(OutputError, match="not writable"):
        score(ScoringJob(inputs=(str(good),), model=model, out_dir=blocker / "out", progress=False))
    assert not (tmp_path / "out" / "candidates.gpkg").exists()


def test_no_crs_warns(tmp_path, blob_model, write_geotiff, caplog):
    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]), crs=None)
    result = run_job(tmp_path, blob_model(TILE), mosaic)
    assert "no CRS" in caplog.text
    assert result.candidates["crs"].tolist() == ["pixel"]


def test_cli_one_line_errors(tmp_path, blob_model, write_geotiff):
    runner = CliRunner()
    mosaic = write_geotiff(gaussian_blobs(300, 300, [(100, 100)]))
    result = runner.invoke(
        cli,
        ["score", str(tmp_path / "nope.tif"), "--model", str(blob_model(TILE)), "-o", str(tmp_path / "o")],
    )
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [f"Error: {tmp_path / 'nope.tif'}: file does not exist"]
    no_card = tmp_path / "nocard.onnx"
    import onnx

    proto = onnx.load_from_string(blob_model(TILE).read_bytes())
    del proto.metadata_props[:]
    no_card.write_bytes(proto.SerializeToString())
    result = runner.invoke(cli, ["score", str(mosaic), "--model", str(no_card), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and "no ordnance model card" in result.output
    ok = runner.invoke(
        cli,
        ["score", str(mosaic), "--model", str(blob_model(TILE)), "-o", str(tmp_path / "o2"), "--no-progress"],
    )
    assert ok.exit_code == 0, ok.output
    assert "1 candidates" in ok.output


@pytest.mark.parametrize("tear", ["line", "header"])
def test_resume_after_a_torn_checkpoint_equals_uninterrupted(tmp_path, scene, tear):
    model, mosaic, _ = scene
    whole = run_job(tmp_path / "a", model, mosaic).candidates
    assert not run_job(tmp_path / "b", model, mosaic, max_tiles=4).complete
    (checkpoint,) = (tmp_path / "b" / "out" / ".ordnance-partial").glob("*.jsonl")
    lines = checkpoint.read_text().splitlines()
    if tear == "line":  # the last batch line cut by a kill
        checkpoint.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    else:
        checkpoint.write_text(lines[0][:10])
    assert not run_job(tmp_path / "b", model, mosaic, max_tiles=2).complete  # resumes once after the tear
    resumed = [json.loads(line) for line in checkpoint.read_text().splitlines()]  # no torn line left inside
    assert sum(len(r["t"]) for r in resumed[1:]) == (3 if tear == "line" else 0) + 2
    second = run_job(tmp_path / "b", model, mosaic)  # and again: the torn line is gone
    assert second.complete
    for name in whole:
        if name != "processed_utc":
            np.testing.assert_array_equal(whole[name], second.candidates[name], err_msg=name)


def test_a_second_scorer_on_the_same_folder_is_refused(tmp_path, scene):
    import fcntl

    model, mosaic, _ = scene
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".ordnance-lock", "w") as held:  # a running scorer holds this lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another 'ordnance score' is writing"):
            run_job(tmp_path, model, mosaic)
        assert not (out / "candidates.gpkg").exists()
    assert run_job(tmp_path, model, mosaic).complete  # free again once it ends
    assert not (out / ".ordnance-lock").exists()


def test_the_lock_follows_a_lock_file_replaced_while_it_was_taken(tmp_path, monkeypatch):
    # A scorer that finishes removes its lock file; one that opened that file just before holds a lock on a file
    # no longer at the path, beside a third scorer that locks the new file. The lock must be on the path's file.
    import fcntl

    from ordnance.inference import scoring

    real, calls = fcntl.flock, []

    def flock(handle, flags):
        real(handle, flags)
        calls.append(handle.fileno())
        if len(calls) == 1:  # the first holder finishes right now: its file goes
            (tmp_path / ".ordnance-lock").unlink()

    monkeypatch.setattr(fcntl, "flock", flock)
    handle = scoring._lock(tmp_path)
    assert len(calls) == 2  # tried again on the file now at the path
    assert os.fstat(handle.fileno()).st_ino == os.stat(tmp_path / ".ordnance-lock").st_ino
    handle.close()


def test_two_sessions_give_the_outputs_of_one(tmp_path, blob_model, write_geotiff):
    """Two ONNX Runtime sessions in one process, taking blocks of windows in turn: the same candidates, ids and
    files as one session (the run's time apart)."""
    rng = np.random.default_rng(5)
    width, height = 2300, 1700
    centres = [(int(c), int(r)) for c, r in zip(rng.integers(2, width - 2, 60), rng.integers(2, height - 2, 60))]
    mosaic = write_geotiff(gaussian_blobs(height, width, centres), "wide.tif")
    model = blob_model(TILE)
    one = score(ScoringJob(inputs=(str(mosaic),), model=model, out_dir=tmp_path / "one", progress=False))
    two = score(ScoringJob(inputs=(str(mosaic),), model=model, out_dir=tmp_path / "two", progress=False,
                           sessions=2, threads=2))  # fmt: skip
    assert len(one.candidates["id"]) == 60 and two.manifest["settings"]["sessions"] == 2

    def rows(folder):
        with open(folder / "candidates.csv", newline="") as handle:
            return [{k: v for k, v in r.items() if k != "processed_utc"} for r in csv.DictReader(handle)]

    assert rows(tmp_path / "two") == rows(tmp_path / "one")
    assert two.manifest["tiles"] == one.manifest["tiles"] > 40


@pytest.mark.parametrize(("options", "message"), [
    ({"sessions": 0}, "--sessions: must be at least 1"),
    ({"sessions": 2, "cluster": "auto"}, "--sessions: sessions run in this process"),
    ({"workers": 2}, "--workers: workers are Ray workers"),
])  # fmt: skip
def test_session_and_worker_counts_are_checked(tmp_path, scene, options, message):
    model, mosaic, _ = scene
    with pytest.raises(InputError, match=message):
        run_job(tmp_path, model, mosaic, **options)


def test_window_blocks_keep_small_files_whole_and_cut_large_ones():
    from ordnance.inference.scoring import window_blocks

    frames = {i: tile_grid(600, 400, TILE, OVERLAP) for i in range(5)}  # a few windows each
    blocks = window_blocks(frames, workers=2, batch=1)
    assert [(i, len(t)) for i, t in blocks] == [(i, len(frames[i])) for i in range(5)]
    large = tile_grid(8000, 6000, TILE, OVERLAP)
    blocks = window_blocks({0: large, 1: []}, workers=2, batch=4)
    sizes = [len(t) for _, t in blocks]
    assert len(blocks) >= 8 and max(sizes) <= 64 and all(n % 4 == 0 for n in sizes[:-1])
    assert [t for _, block in blocks for t in block] == large  # every window once, in order
