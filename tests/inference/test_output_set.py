"""The output set is committed as a whole: a file that fails its read-back check leaves the previous set
untouched, and a run killed while the set is switched leaves no manifest (the folder says it holds no complete
set) until the next run replaces everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner
from helpers import gaussian_blobs
from ordnance.inference import outputs
from ordnance.inference.cli.main import cli
from ordnance.inference.errors import OutputError
from ordnance.inference.scoring import ScoringJob, score

CENTRES = [(60, 60), (200, 120), (330, 260), (100, 250)]
NAMES = ("candidates.gpkg", "candidates.geojson", "candidates.kml", "candidates.csv", "manifest.json")


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name in NAMES}


def _consistent(out: Path) -> int:
    """Every file of the set holds the manifest's candidates; returns that count."""
    n = json.loads((out / "manifest.json").read_text())["candidates"]
    for name in NAMES[:3]:
        layer = "candidates" if name.endswith(".gpkg") else None
        assert pyogrio.read_info(out / name, layer=layer, force_feature_count=True)["features"] == n, name
    assert len((out / "candidates.csv").read_text().splitlines()) == n + 1
    return n


@pytest.fixture
def first_set(tmp_path, blob_model, write_geotiff):
    model = blob_model(256)
    mosaic = write_geotiff(gaussian_blobs(300, 480, CENTRES))
    out = tmp_path / "out"
    job = ScoringJob(inputs=(str(mosaic),), model=model, out_dir=out, progress=False, resume=False,
                     formats=("gpkg", "geojson", "kml", "csv"))  # fmt: skip
    score(job)
    assert _consistent(out) == len(CENTRES)
    # the next survey of the same folder: one more item
    write_geotiff(gaussian_blobs(300, 480, [*CENTRES, (400, 40)]))
    return job, out


def test_a_truncated_file_leaves_the_previous_set_untouched(first_set, monkeypatch):
    job, out = first_set
    before = _snapshot(out)
    real = outputs.write_lonlat_layer

    def full_disk(path, table, driver):  # GDAL's KML driver reports no error when the disk fills up
        real(path, table, driver)
        if driver == "KML":
            path.write_bytes(path.read_bytes()[:300])

    monkeypatch.setattr(outputs, "write_lonlat_layer", full_disk)
    with pytest.raises(OutputError, match=r"candidates.kml: .*previous outputs are untouched"):
        score(job)
    assert _snapshot(out) == before
    assert not (out / outputs.STAGING).exists()
    monkeypatch.undo()
    score(job)
    assert _consistent(out) == len(CENTRES) + 1


KILLER = """
import os, signal, sys
from ordnance.inference import outputs
from ordnance.inference.scoring import ScoringJob, score
real = os.replace
def replace(src, dst):
    real(src, dst)
    staged = outputs.STAGING in str(dst)
    if str(dst).endswith("candidates.geojson") and staged == (sys.argv[4] == "staging"):
        os.kill(os.getpid(), signal.SIGKILL)
outputs.os.replace = replace
score(ScoringJob(inputs=(sys.argv[1],), model=sys.argv[2], out_dir=sys.argv[3], progress=False, resume=False,
                 formats=("gpkg", "geojson", "kml", "csv")))
"""


@pytest.mark.parametrize("when", ["staging", "switch"])
def test_a_killed_run_leaves_the_previous_set_or_no_manifest_until_rerun(first_set, tmp_path, when):
    job, out = first_set
    before = _snapshot(out)
    script = tmp_path / "killed.py"
    script.write_text(KILLER)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, str(script), job.inputs[0], str(job.model), str(out), when],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    if when == "staging":  # killed while writing: the previous set is whole and still claimed
        assert _snapshot(out) == before and (out / outputs.STAGING).exists()
    else:  # killed halfway through the switch: mixed files, and nothing claims they are a set
        assert not (out / "manifest.json").exists()
        result = CliRunner().invoke(cli, ["review", "build", str(out)])
        assert result.exit_code != 0 and "run 'ordnance score' first" in result.output
    score(job)
    assert _consistent(out) == len(CENTRES) + 1
    assert not (out / outputs.STAGING).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".candidates")]


def test_the_review_page_of_a_replaced_set_goes_with_it(first_set):
    job, out = first_set
    CliRunner().invoke(cli, ["review", "build", str(out)])
    assert (out / "review.html").exists()
    score(job)  # the API writes no page: the old one must not stay beside the new set
    assert not (out / "review.html").exists() and not (out / "review_files").exists()
    assert np.isclose(_consistent(out), len(CENTRES) + 1)


def test_a_full_disk_is_one_line_and_leaves_the_previous_set(first_set, monkeypatch):
    import errno

    job, out = first_set
    before = _snapshot(out)

    def full(path, table):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(outputs, "write_csv", full)
    result = CliRunner().invoke(cli, ["score", job.inputs[0], "--model", str(job.model), "-o", str(out),
                                      "--no-progress", "--no-resume", "--format", "gpkg", "--format", "geojson",
                                      "--format", "kml", "--format", "csv"])  # fmt: skip
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"Error: {out / outputs.STAGING / 'candidates.csv'}: {os.strerror(errno.ENOSPC)}"
    ]
    assert _snapshot(out) == before and not (out / outputs.STAGING).exists()
