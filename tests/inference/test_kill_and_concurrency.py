"""Real processes: ``ordnance score`` killed with SIGKILL at seeded random moments, then run again until it
finishes, gives the same candidates as an uninterrupted run and leaves nothing else in the folder; a second scorer
started on a folder that a running scorer holds is refused in one line and changes nothing."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import blob_model_bytes, gaussian_blobs
from ordnance.inference.cli.main import cli

ORDNANCE = Path(sys.executable).parent / "ordnance"
FILES = {"manifest.json", "candidates.csv", "candidates.gpkg", "review_preview.npz"}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    import rasterio
    from rasterio.transform import from_origin

    root = tmp_path_factory.mktemp("survey")
    rng = np.random.default_rng(7)
    centres = [tuple(int(v) for v in rng.integers(10, 2990, 2)) for _ in range(60)]
    mosaic = root / "survey.tif"
    with rasterio.open(mosaic, "w", driver="GTiff", width=3000, height=3000, count=3, dtype="uint8",
                       crs="EPSG:32636", transform=from_origin(500000.0, 5600000.0, 0.01, 0.01), tiled=True,
                       blockxsize=256, blockysize=256) as dst:  # fmt: skip
        dst.write(gaussian_blobs(3000, 3000, centres))
    model = root / "blob.onnx"
    model.write_bytes(blob_model_bytes(256))
    return mosaic, model


@pytest.fixture(scope="module")
def large_survey(survey, tmp_path_factory):
    """12,000 px square, nearly all empty ground (unwritten blocks read as zeros): about 3,000 windows, so that a
    scorer runs for seconds; the items of ``survey`` sit in its top-left corner."""
    import rasterio

    mosaic, model = survey
    path = tmp_path_factory.mktemp("large") / "large.tif"
    with rasterio.open(mosaic) as src:
        profile = src.profile | {"width": 12000, "height": 12000, "compress": "deflate", "SPARSE_OK": True}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(), window=rasterio.windows.Window(0, 0, 3000, 3000))
    return path, model


def _argv(survey, out: Path) -> list[str]:
    mosaic, model = survey
    return [str(mosaic), "--model", str(model), "-o", str(out), "--no-progress", "--batch-size", "1",
            "--threads", "1", "--format", "csv", "--format", "gpkg", "--no-review"]  # fmt: skip


def _rows(out: Path) -> list[tuple]:
    """The candidates as written, without the processing time."""
    with open(out / "candidates.csv", newline="") as handle:
        return sorted(tuple(v for k, v in row.items() if k != "processed_utc") for row in csv.DictReader(handle))


def _everything(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*")}


def test_killed_at_random_moments_then_rerun_gives_the_uninterrupted_outputs_and_no_litter(survey, tmp_path):
    reference = tmp_path / "reference"
    start = time.monotonic()
    subprocess.run([str(ORDNANCE), "score", *_argv(survey, reference)], check=True, capture_output=True)
    duration = time.monotonic() - start
    assert _everything(reference) == FILES and len(_rows(reference)) == 60

    out = tmp_path / "killed"
    rng = np.random.default_rng(2026)
    killed = 0
    for delay in rng.uniform(0.2, 1.0, 5) * duration:  # imports, planning, scoring, writes, the switch
        process = subprocess.Popen([str(ORDNANCE), "score", *_argv(survey, out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        killed += process.wait() == -signal.SIGKILL
    assert killed >= 3  # most kills landed while the scorer ran
    done = subprocess.run([str(ORDNANCE), "score", *_argv(survey, out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _rows(out) == _rows(reference)
    assert _everything(out) == FILES  # no checkpoint, staging folder, lock or temporary file left
    with np.load(out / "review_preview.npz") as got, np.load(reference / "review_preview.npz") as want:
        assert sorted(got.files) == sorted(want.files)
        for name in want.files:  # the review page's images, carried through every kill by the checkpoint
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_second_scorer_on_a_held_folder_is_refused_and_the_first_finishes(large_survey, tmp_path):
    out = tmp_path / "shared"
    first = subprocess.Popen([str(ORDNANCE), "score", *_argv(large_survey, out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / ".ordnance-lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert first.poll() is None, "the first scorer ended before it could be raced"
    second = CliRunner().invoke(cli, ["score", *_argv(large_survey, out)])
    racing = first.poll() is None
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert racing, "the first scorer ended before the second was refused: the race was not run"
    assert second.exit_code != 0
    errors = [line for line in second.output.splitlines() if "Error" in line]
    assert len(errors) == 1 and "another 'ordnance score' is writing" in errors[0] and str(out) in errors[0], errors
    assert len(_rows(out)) == 60 and _everything(out) == FILES


def test_ctrl_c_stops_every_session_at_once_and_the_run_resumes(large_survey, tmp_path):
    """``--sessions 2`` interrupted with SIGINT: the sessions stop with the main thread (none keeps scoring, or writes
    into the checkpoint once it is closed), the checkpoint holds whole records only, and the same command resumes
    to the uninterrupted outputs."""
    import json

    from ordnance.inference.scoring import PARTIAL_DIR

    mosaic, model = large_survey
    argv = [str(mosaic), "--model", str(model), "--no-progress", "--batch-size", "1", "--threads", "2",
            "--sessions", "2", "--format", "csv", "--no-review"]  # fmt: skip
    reference = tmp_path / "reference"
    subprocess.run([str(ORDNANCE), "score", *argv, "-o", str(reference), "--sessions", "1"], check=True,
                   capture_output=True)  # fmt: skip
    out = tmp_path / "interrupted"
    # SIGINT as a terminal sends it; a shell that starts the test suite in the background has it ignored, which a
    # child would inherit (and Python then installs no KeyboardInterrupt handler)
    process = subprocess.Popen([str(ORDNANCE), "score", *argv, "-o", str(out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip

    def windows_done() -> int:
        files = list((out / PARTIAL_DIR).glob("*.jsonl")) if (out / PARTIAL_DIR).exists() else []
        lines = files[0].read_text().splitlines()[1:] if files else []
        return sum(len(json.loads(line)["t"]) for line in lines if line.endswith("}"))

    while windows_done() < 200 and process.poll() is None:  # scoring in both sessions
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    assert process.returncode != 0
    at_exit = windows_done()
    total = json.loads((reference / "manifest.json").read_text())["tiles"]
    assert 0 < at_exit < total // 2, (at_exit, total)  # stopped, not scored to the end by the sessions left behind
    checkpoint = next((out / PARTIAL_DIR).glob("*.jsonl")).read_text()
    assert checkpoint.endswith("\n") and all(json.loads(line) for line in checkpoint.splitlines())
    time.sleep(1.0)
    assert windows_done() == at_exit  # nothing written after the process ended
    done = subprocess.run([str(ORDNANCE), "score", *argv, "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _rows(out) == _rows(reference)
