"""Scoring on a real local Ray cluster: a head node started with ``ray start --head`` on 127.0.0.1, joined by
address, stopped afterwards. The cluster's outputs must equal a single-process run's, also when a worker process
is killed mid-run or the driver is killed and the command run again."""

from __future__ import annotations

import csv
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import gaussian_blobs
from ordnance.inference.errors import InputError
from ordnance.inference.scoring import PARTIAL_DIR, ScoringJob, score
from rasterio.transform import from_origin

BIN = Path(sys.executable).parent
TILE = 256
# A head node, a survey scored 4 times and a driver killed: over a minute on 2 cores. `make test` runs them after
# the default suite (`pytest -m slow tests/cluster`).
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head node on 127.0.0.1 with 2 CPUs and token authentication (a fresh token in RAY_AUTH_TOKEN, as a
    deployment shares one with every node and driver; a machine need not have ~/.ray/auth_token); yields its
    address and its Ray Client address."""
    port, client_port = _free_port(), _free_port()
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_AUTH_MODE"] = "token"  # this process is the drivers' process: it must send the token too
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # 256 bits, as `ray get-auth-token --generate`
    env = dict(os.environ)
    started = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
         "2", "--ray-client-server-port", str(client_port), "--include-dashboard", "false", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        yield f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A 4096 x 3072 px mosaic (over 200 windows of 256 px) with 150 blobs, and the blob model."""
    from helpers import blob_model_bytes

    folder = tmp_path_factory.mktemp("survey")
    rng = np.random.default_rng(11)
    width, height = 4096, 3072
    centres = [(int(c), int(r)) for c, r in zip(rng.integers(3, width - 3, 150), rng.integers(3, height - 3, 150))]
    path = folder / "mosaic.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32636", transform=from_origin(500000.0, 5600000.0, 0.01, 0.01), tiled=True,
                       blockxsize=256, blockysize=256) as dst:  # fmt: skip
        dst.write(gaussian_blobs(height, width, centres))
    model = folder / "blob.onnx"
    model.write_bytes(blob_model_bytes(TILE))
    single = score(ScoringJob(inputs=(str(path),), model=model, out_dir=folder / "single", progress=False))
    assert len(single.candidates["id"]) == 150
    return {"mosaic": path, "model": model, "single": folder / "single"}


def _rows(folder: Path) -> list[dict]:
    with open(folder / "candidates.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.pop("processed_utc")  # the run's start time
    return rows


def _same_outputs(a: Path, b: Path) -> None:
    assert _rows(a) == _rows(b)
    for name in ("candidates.geojson", "candidates.kml"):  # written from the same table: equal but for the time
        strip = [line for line in (a / name).read_text().splitlines() if "processed_utc" not in line]
        assert strip == [line for line in (b / name).read_text().splitlines() if "processed_utc" not in line]


def _job(survey, out: Path, head: str, **kw) -> ScoringJob:
    return ScoringJob(inputs=(str(survey["mosaic"]),), model=survey["model"], out_dir=out, progress=False,
                      cluster=head, **kw)  # fmt: skip


def test_cluster_run_equals_single_process(head, survey, tmp_path):
    result = score(_job(survey, tmp_path / "ray", head[0], workers=2, threads=2))
    _same_outputs(result.outputs["csv"].parent, survey["single"])
    cluster = result.manifest["cluster"]
    assert cluster["engine"] == "ray" and cluster["address"] == head[0]
    assert (cluster["nodes"], cluster["workers"], cluster["threads_per_worker"]) == (1, 2, 1)
    assert len(cluster["hosts"]) == 1 and cluster["worker_processes"] == 2
    windows = result.manifest["tiles"]
    assert windows == json.loads((survey["single"] / "manifest.json").read_text())["tiles"] > 200
    assert cluster["blocks"] == 8  # 4 blocks per worker, each of at most 64 windows


def _worker_pids() -> list[int]:
    pids = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            text = Path(path).read_bytes()
        except OSError:
            continue
        if text.startswith(b"ray::ScoringWorker"):
            pids.append(int(path.split("/")[2]))
    return pids


def _records(out: Path) -> int:
    """Windows in the run's checkpoint (a line per batch, written when their block comes back)."""
    files = list((out / PARTIAL_DIR).glob("*.jsonl"))
    lines = files[0].read_text().splitlines()[1:] if files else []
    return sum(len(json.loads(line)["t"]) for line in lines if line.endswith("}"))


def test_a_killed_worker_is_restarted_and_the_outputs_are_the_same(head, survey, tmp_path):
    out = tmp_path / "ray"
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(r=score(_job(survey, out, head[0], workers=2, threads=2))))
    run.start()
    deadline = time.monotonic() + 120
    while _records(out) < 1 and time.monotonic() < deadline:  # a block is done: the workers are scoring
        time.sleep(0.05)
    pids = _worker_pids()
    assert len(pids) == 2 and run.is_alive(), (pids, _records(out))
    os.kill(pids[0], signal.SIGKILL)
    run.join(timeout=300)
    assert "r" in result
    _same_outputs(out, survey["single"])
    assert result["r"].manifest["cluster"]["worker_processes"] == 3  # the killed one, and the one Ray started again


def test_a_killed_driver_resumes_when_run_again(head, survey, tmp_path):
    out = tmp_path / "ray"
    command = [str(BIN / "ordnance"), "score", str(survey["mosaic"]), "--model", str(survey["model"]), "-o",
               str(out), "--cluster", head[0], "--workers", "2", "--threads", "2", "--no-progress",
               "--no-review"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _records(out) < 1 and time.monotonic() < deadline and first.poll() is None:  # a block is in
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    done, windows = _records(out), json.loads((survey["single"] / "manifest.json").read_text())["tiles"]
    assert 0 < done < windows and not (out / "manifest.json").exists(), done  # killed mid-run, no outputs yet
    header = json.loads(next((out / PARTIAL_DIR).glob("*.jsonl")).read_text().splitlines()[0])
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    _same_outputs(out, survey["single"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["started_utc"] == header["started_utc"]  # the same run, continued
    assert manifest["cluster"]["windows"] == windows - done  # only what the first driver had not finished
    assert not (out / PARTIAL_DIR).exists()


def test_more_threads_than_the_cluster_has_are_refused(head, survey, tmp_path):
    with pytest.raises(InputError, match="--workers: 3 workers x 1 threads need 3 CPUs, and the cluster has 2"):
        score(_job(survey, tmp_path / "o", head[0], workers=3, threads=3))
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_through_ray_client(head, survey, tmp_path):
    result = score(_job(survey, tmp_path / "client", head[1], workers=1, threads=2))
    _same_outputs(tmp_path / "client", survey["single"])
    assert result.manifest["cluster"]["address"] == head[1] and result.manifest["cluster"]["workers"] == 1


def test_unreachable_cluster_is_one_line_error(survey, tmp_path):
    port = _free_port()
    with pytest.raises(InputError, match=f"127.0.0.1:{port}: cannot join the Ray cluster"):
        score(_job(survey, tmp_path / "o", f"127.0.0.1:{port}"))
