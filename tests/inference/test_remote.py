"""Mosaics read by URL from a local HTTP server with range requests, as from object storage: windowed reads
fetch a small part of the file, and scoring a URL gives the candidates of the same file read from disk."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
from helpers import RangeServer, gaussian_blobs
from ordnance.inference.errors import InputError
from ordnance.inference.grid import tile_grid
from ordnance.inference.raster import RemoteFile, open_raster, read_tile
from ordnance.inference.scoring import ScoringJob, expand_inputs, score
from ordnance.inference.session import open_session
from rasterio.transform import from_origin

SIDE, TILE = 2048, 256


@pytest.fixture
def cog(tmp_path):
    """A 2048 x 2048 px COG (256 px internal tiles, deflate) with 40 blobs on textured ground, in a served folder."""
    rng = np.random.default_rng(7)
    centres = [(int(c), int(r)) for c, r in rng.integers(4, SIDE - 4, (40, 2))]
    ground = rng.integers(0, 60, (SIDE, SIDE)).astype(np.float32)  # noise, so the file does not compress to nothing
    data = gaussian_blobs(SIDE, SIDE, centres, background=ground)
    folder = tmp_path / "served"
    folder.mkdir()
    path = folder / "mosaic.tif"
    profile = dict(driver="COG", width=SIDE, height=SIDE, count=3, dtype="uint8", crs="EPSG:32636",
                   transform=from_origin(500000.0, 5600000.0, 0.01, 0.01), blocksize=256,
                   compress="deflate")  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _rows(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.pop("processed_utc")  # the run's start time
    return rows


def test_urls_are_parsed_to_gdal_paths():
    assert RemoteFile.parse("https://host/a/b/m.tif?x=1").vsi == "/vsicurl/https://host/a/b/m.tif?x=1"
    assert RemoteFile.parse("s3://bucket/surveys/m.tif").vsi == "/vsis3/bucket/surveys/m.tif"
    assert RemoteFile.parse("/vsis3/bucket/m.tif").url == "s3://bucket/m.tif"
    assert RemoteFile.parse("/vsicurl/http://h/m.tif").url == "http://h/m.tif"
    assert RemoteFile.parse("s3://bucket/surveys/m.tif").name == "m.tif"
    assert RemoteFile.parse("/data/m.tif") is None and RemoteFile.parse("m.tif") is None


def test_one_window_reads_a_small_part_of_the_file(cog, blob_model):
    card = open_session(blob_model(TILE)).card
    with RangeServer(cog.parent) as server:
        with open_raster(server.url("mosaic.tif")) as dataset:
            tile = tile_grid(SIDE, SIDE, TILE, 0)[27]
            image, valid = read_tile(dataset, tile, card, None, TILE)
        sent = server.bytes_sent
    with rasterio.open(cog) as local:
        expected = local.read(window=rasterio.windows.Window(tile.col_off, tile.row_off, TILE, TILE))
    np.testing.assert_array_equal(image, expected)
    assert valid.all()
    size = cog.stat().st_size
    assert 0 < sent < 0.1 * size, (sent, size)  # the header and one 256 px block of a 64-block file
    assert all(r != "whole" for r in server.requests), server.requests


def test_scoring_a_url_equals_scoring_the_file(cog, blob_model, tmp_path):
    model = blob_model(TILE)
    local = score(ScoringJob(inputs=(str(cog),), model=model, out_dir=tmp_path / "local", progress=False))
    with RangeServer(cog.parent) as server:
        url = server.url("mosaic.tif")
        remote = score(ScoringJob(inputs=(url,), model=model, out_dir=tmp_path / "remote", progress=False))
        sent = server.bytes_sent
    assert len(local.candidates["id"]) >= 35
    assert _rows(tmp_path / "remote" / "candidates.csv") == _rows(tmp_path / "local" / "candidates.csv")
    entry = remote.manifest["inputs"][0]
    assert entry["path"] == url and entry["sha256"] is None
    assert int(entry["remote"]["size_bytes"]) == cog.stat().st_size
    # every window once (with its overlap), not the file again per window: at most about twice its size
    assert sent < 2 * cog.stat().st_size, (sent, cog.stat().st_size)
    assert json.loads((tmp_path / "remote" / "manifest.json").read_text())["inputs"][0]["path"] == url


def test_unreachable_url_is_one_line_error(tmp_path, blob_model):
    with RangeServer(tmp_path) as server:
        missing = server.url("nothing.tif")
        with pytest.raises(InputError, match="nothing.tif: not a readable raster"):
            score(ScoringJob(inputs=(missing,), model=blob_model(TILE), out_dir=tmp_path / "o", progress=False))


def test_two_urls_with_one_file_name_are_refused():
    with pytest.raises(InputError, match="same file name"):
        expand_inputs(["https://a.example/m.tif", "s3://bucket/m.tif"])


def test_s3_url_through_an_s3_compatible_endpoint(cog, blob_model, tmp_path, monkeypatch):
    """s3://bucket/key through GDAL's /vsis3/, here against the local server as a path-style, unsigned
    S3-compatible endpoint (as MinIO or Ceph serve it)."""
    bucket = cog.parent.parent / "bucket"
    bucket.mkdir()
    (bucket / "surveys").mkdir()
    (bucket / "surveys" / "mosaic.tif").write_bytes(cog.read_bytes())
    model = blob_model(TILE)
    local = score(ScoringJob(inputs=(str(cog),), model=model, out_dir=tmp_path / "local", progress=False))
    with RangeServer(bucket.parent) as server:
        endpoint = server.url("").removeprefix("http://").rstrip("/")
        for key, value in {"AWS_S3_ENDPOINT": endpoint, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
                           "AWS_NO_SIGN_REQUEST": "YES"}.items():  # fmt: skip
            monkeypatch.setenv(key, value)
        remote = score(ScoringJob(inputs=("s3://bucket/surveys/mosaic.tif",), model=model, out_dir=tmp_path / "s3",
                                  progress=False))  # fmt: skip
        assert server.requests and all(r != "whole" for r in server.requests)
    assert len(remote.candidates["id"]) == len(local.candidates["id"]) >= 35
    assert _rows(tmp_path / "s3" / "candidates.csv") == _rows(tmp_path / "local" / "candidates.csv")
    assert remote.manifest["inputs"][0]["path"] == "s3://bucket/surveys/mosaic.tif"


def test_cli_scores_a_url_with_its_review_page(cog, blob_model, tmp_path):
    """`ordnance score URL` as analysts run it: the review page reads the URL too, and the run has an identity."""
    from click.testing import CliRunner
    from ordnance.inference.cli.main import cli
    from ordnance.inference.review import run_id

    out = tmp_path / "out"
    with RangeServer(cog.parent) as server:
        result = CliRunner().invoke(cli, ["score", server.url("mosaic.tif"), "--model", str(blob_model(TILE)), "-o",
                                          str(out), "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "review.html").exists() and list((out / "review_files").glob("overview_*.jpg"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(run_id(manifest)) == 16
