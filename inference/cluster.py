"""Scoring on a Ray cluster: the same windows, the same records, many machines.

The driver (the process running ``ordnance score``) plans every input as a single-process run does, then cuts the
windows still to do into blocks of consecutive windows of one file (a small file, such as a frame, is one block).
Ray actors each hold one ONNX Runtime session (whole CPU threads, or a share of a GPU with CUDA); each block is one
task, read by windows on the worker (a shared file system or a URL: no worker reads a whole mosaic, no pixel passes
through the driver) and computed with the code a single process runs (``scoring.file_records``). The records come
back to the driver, which appends them to the same checkpoint and, when every window is done, runs the same global
seam merge and the same writers. So the outputs equal a single-process run's: the same candidates with the same ids
and the same files, apart from timings and the manifest's ``cluster`` entry.

Faults: an actor whose process dies is restarted by Ray and its block run again (``max_restarts`` and
``max_task_retries``); finished blocks are in the checkpoint, so a driver killed mid-run resumes when the same
command runs again. Ray is an optional dependency (``pip install 'ordnance[cluster]'``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import tempfile
import time
from typing import Any

from ordnance.inference.errors import InputError, OrdnanceError, OutputError
from ordnance.inference.scoring import window_blocks

log = logging.getLogger(__name__)

RESTARTS = 4  # an actor whose process died is started again this many times, and its block re-run as often
JOIN_ATTEMPTS = 3  # connections tried through a Ray Client server (ray://) that fails to start a session
IN_FLIGHT = 2  # blocks queued on each actor, so that it never waits for the driver between blocks


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("Ray is not installed: pip install 'ordnance[cluster]'", "--cluster") from None
    return ray


def connect(address: str) -> bool:
    """Join the cluster at ``address`` ("auto", "HOST:PORT" or "ray://HOST:PORT"); True when this call
    connected (and so must disconnect), False when the process was already connected."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address != "auto":  # Ray retries an address where nothing listens for minutes; say so at once
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or "timed out"
            raise InputError(f"cannot join the Ray cluster (nothing answers there: {reason})", address) from None
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        try:
            ray.init(address=None if address == "auto" else address, logging_level=logging.WARNING)
            return True
        except (ConnectionError, RuntimeError, ValueError) as error:
            lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
            # the Ray Client server answers a failed start with its traceback: its last line says why
            reason = (lines[-1] if len(lines) > 1 and lines[0].startswith("Initialization failure") else
                      lines[0] if lines else type(error).__name__)  # fmt: skip
            # A Ray Client server starts one process per connection, which can fail on its own (a crash at
            # start-up); the next connection gets a fresh one. Anything else is not retried.
            session_failed = isinstance(error, ConnectionAbortedError) or str(error).startswith("Initialization")
            if not (address.startswith("ray://") and session_failed):
                break
            if attempt < JOIN_ATTEMPTS:
                log.warning("%s: the Ray Client server failed to start a session (%s); trying again (%d of %d)",
                            address, reason[:200], attempt + 1, JOIN_ATTEMPTS)  # fmt: skip
                ray.shutdown()
                time.sleep(2.0 * attempt)
    raise InputError(f"cannot join the Ray cluster ({reason[:200]})", address) from None


class ScoringWorker:
    """One ONNX Runtime session on a worker, scoring blocks of windows."""

    def __init__(self, model: bytes, sha256: str, name: str, device: str, threads: int, fp16: bool = False) -> None:
        from ordnance.inference.session import open_session

        if hashlib.sha256(model).hexdigest() != sha256:
            raise OutputError("model bytes changed in transfer to the worker", name)
        self._dir = tempfile.mkdtemp(prefix="ordnance-worker-")
        path = os.path.join(self._dir, name)
        with open(path, "wb") as handle:
            handle.write(model)
        self.detector = open_session(path, device=device, threads=threads, fp16=fp16)

    def describe(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "host": ray.util.get_node_ip_address(), "provider": self.detector.provider}  # fmt: skip

    def score(self, plan, index: int, tiles: list, batch: int, threshold: float) -> dict[str, Any]:
        from ordnance.inference.scoring import file_records

        timings = {"infer_s": 0.0, "wait_s": 0.0}
        tick = time.perf_counter()
        records = list(file_records(plan, index, tiles, self.detector, batch, threshold, timings))
        return {"records": records, "timings": timings, "wall_s": time.perf_counter() - tick, "pid": os.getpid()}


def _plan_workers(job, resources: dict[str, float], nodes: int) -> tuple[int, int, float]:
    """(workers, ONNX Runtime threads per worker, GPUs per worker) from the job and the cluster's resources."""
    cpus = int(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    gpu = job.device in ("cuda", "tensorrt")
    if gpu and gpus <= 0:
        raise InputError(f"--device {job.device} asks for GPUs, and the Ray cluster has none", "--cluster")
    workers = job.workers or (max(1, int(gpus)) if gpu else nodes)
    threads = max(1, (job.threads or cpus) // workers)
    if not gpu and workers * threads > cpus:
        raise InputError(
            f"{workers} workers x {threads} threads need {workers * threads} CPUs, and the cluster has {cpus}",
            "--workers",
        )
    return workers, threads, (gpus / workers if gpu else 0.0)


def score_on_ray(job, plans, todo, detector, batch: int, threshold: float, checkpoint, timings: dict) -> dict:
    """Score ``todo`` ({file index: windows}) on the cluster, appending each block's records to ``checkpoint``.
    Returns what the manifest records about the cluster."""
    from tqdm import tqdm

    ray = _ray()
    owned = connect(job.cluster)
    started = time.perf_counter()
    pool: list = []
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        resources = ray.cluster_resources()
        workers, threads, gpus = _plan_workers(job, resources, len(nodes))
        actor = ray.remote(ScoringWorker).options(
            num_cpus=0 if gpus else threads, num_gpus=gpus, max_restarts=RESTARTS, max_task_retries=RESTARTS
        )
        model = ray.put(detector.path.read_bytes())
        pool += [actor.remote(model, detector.sha256, detector.path.name, job.device, threads, job.fp16)
                 for _ in range(workers)]  # fmt: skip
        # the plans without their window lists (a large mosaic has thousands): a block carries its own windows
        refs = [ray.put(dataclasses.replace(plan, tiles=[])) for plan in plans]
        blocks = window_blocks(todo, workers, batch)
        n_blocks, n_windows = len(blocks), sum(len(tiles) for _, tiles in blocks)
        done_before = sum(len(v) for v in checkpoint.done.values())
        total = sum(len(p.tiles) for p in plans)
        hosts = ray.get([a.describe.remote() for a in pool])
        pids: set[int] = {h["pid"] for h in hosts}
        worker_s = {"infer_s": 0.0, "wait_s": 0.0, "busy_s": 0.0}
        in_flight: dict[Any, int] = {}
        load = [0] * workers
        with tqdm(total=total, initial=done_before, unit="tile", desc=f"ray x{workers}", disable=not job.progress,
                  dynamic_ncols=True) as bar:  # fmt: skip
            while blocks or in_flight:
                for w in range(workers):
                    while blocks and load[w] < IN_FLIGHT:
                        index, tiles = blocks.popleft()
                        in_flight[pool[w].score.remote(refs[index], index, tiles, batch, threshold)] = w
                        load[w] += 1
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    load[in_flight.pop(ref)] -= 1
                    result = _result(ray, ref)
                    for record in result["records"]:
                        checkpoint.append(record)
                        bar.update(len(record["t"]))
                    pids.add(result["pid"])
                    for key in ("infer_s", "wait_s"):
                        worker_s[key] += result["timings"][key]
                    worker_s["busy_s"] += result["wall_s"]
    finally:
        for a in pool:  # also when a block failed: no actor outlives the run on a cluster that others share
            ray.kill(a)
        if owned:
            ray.shutdown()
    timings["cluster_s"] = time.perf_counter() - started
    return {
        "engine": "ray",
        "ray_version": ray.__version__,
        "address": job.cluster,
        "nodes": len(nodes),
        "cluster_cpus": resources.get("CPU", 0),
        "cluster_gpus": resources.get("GPU", 0),
        "workers": workers,
        "threads_per_worker": threads,
        "gpus_per_worker": gpus,
        "execution_providers": sorted({h["provider"] for h in hosts}),
        "hosts": sorted({h["host"] for h in hosts}),
        "blocks": n_blocks,
        "windows": n_windows,  # scored in this call: fewer than the run's when it resumed
        "worker_processes": len(pids),  # more than the workers: a worker died and Ray started it again
        "worker_seconds": {k: round(v, 3) for k, v in worker_s.items()},
    }


def _result(ray, ref) -> dict[str, Any]:
    """A block's result; an ordnance error raised on a worker is raised here as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, OrdnanceError):
            raise cause from None
        raise
    except ray.exceptions.RayActorError as error:
        raise OutputError(f"a Ray worker died {RESTARTS + 1} times ({type(error).__name__}); run the same command "
                          "again to resume from the blocks already scored", "--cluster") from None  # fmt: skip
