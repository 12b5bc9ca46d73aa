"""Scoring on a Ray cluster against one process at the same total thread count, the bytes a URL input reads,
and a capacity plan for a million hectares from the measured rates.

On this machine: a Ray head node (`ray start --head`, 127.0.0.1, token authentication) and `ordnance score` on one
mosaic, each run a fresh command on the idle machine, in this order: one process; Ray with 1 worker of all the
threads; Ray with 2 workers of half the threads each; one process again (the two single-process runs bound the
machine's own drift). Ray's overhead is its ha/h against the mean of the single-process runs; per window, the
extra wall time divided by the windows. Then a COG cut from the mosaic is served by a local range-request HTTP
server and scored by URL: the bytes read against the file's size, and the candidates against the local file's.

    .venv/bin/python experiments/cluster/run.py --model experiments/tiles/data/model_512.int8.onnx \\
        --mosaic experiments/tiles/data/tiled_20000.tif
    .venv/bin/python experiments/cluster/run.py --report      # results.md and the README block only

Writes results.json and results.md here.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments"))
sys.path.insert(0, str(REPO / "tests"))  # the range-request server of the URL tests

from common import tiled_mosaic, write_readme_block  # noqa: E402

BIN = Path(sys.executable).absolute().parent
DATA = HERE / "data"
RESULTS = HERE / "results.json"
TERRITORY_HA = 1_000_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_head(cpus: int) -> tuple[str, dict]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    home_token = Path.home() / ".ray" / "auth_token"
    if not (env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH") or home_token.exists()):
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # a token for this local cluster only, passed to its drivers
    port = _free_port()
    done = subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
                           str(port), "--num-cpus", str(cpus), "--include-dashboard", "false",
                           "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"ray start failed: {done.stderr.strip().splitlines()[-1]}")
    return f"127.0.0.1:{port}", env


def score_run(name: str, mosaic: str, model: Path, threads: int, env: dict, cluster: str | None = None,
              workers: int = 0) -> dict:  # fmt: skip
    out = DATA / f"scored_{name}"
    shutil.rmtree(out, ignore_errors=True)
    command = [str(BIN / "ordnance"), "score", mosaic, "--model", str(model), "-o", str(out), "--threads",
               str(threads), "--no-review", "--format", "csv", "--no-progress", "--no-resume"]  # fmt: skip
    if cluster:
        command += ["--cluster", cluster, "--workers", str(workers)]
    tick = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=7200)
    wall = time.perf_counter() - tick
    manifest = json.loads((out / "manifest.json").read_text())
    ha = manifest["area_scanned_ha"]
    with open(out / "candidates.csv", newline="") as handle:
        rows = [{k: v for k, v in r.items() if k not in ("processed_utc", "source")} for r in csv.DictReader(handle)]
    entry = {
        "name": name, "cluster": cluster is not None, "workers": workers or 1, "threads": threads, "wall_s": wall,
        "ha": ha, "ha_per_h": ha / (wall / 3600), "windows": manifest["tiles"], "candidates": manifest["candidates"],
        "timings": manifest["timings"], "cluster_manifest": manifest.get("cluster"),
    }  # fmt: skip
    print(json.dumps({k: v for k, v in entry.items() if k != "cluster_manifest"}), flush=True)
    return entry | {"rows": rows}


def url_check(mosaic: Path, model: Path, threads: int, side: int) -> dict:
    """A COG cut from the mosaic, scored from disk and by URL from a local range-request server."""
    import rasterio
    from helpers import RangeServer
    from rasterio.windows import Window

    folder = DATA / "served"
    folder.mkdir(parents=True, exist_ok=True)
    cog = folder / "cut.tif"
    with rasterio.open(mosaic) as src:
        window = Window(0, 0, side, side)
        profile = src.profile | {"driver": "COG", "width": side, "height": side, "blocksize": 512,
                                 "compress": "deflate", "transform": src.window_transform(window)}  # fmt: skip
        for key in ("blockxsize", "blockysize", "tiled", "interleave", "zlevel", "BIGTIFF"):
            profile.pop(key, None)
        with rasterio.open(cog, "w", **profile) as dst:
            dst.write(src.read(window=window))
    env = dict(os.environ)
    local = score_run("url_local", str(cog), model, threads, env)
    with RangeServer(folder) as server:
        remote = score_run("url_remote", server.url("cut.tif"), model, threads, env)
        whole = server.bytes_sent
        server.bytes_sent = 0
        one = DATA / "scored_url_one"
        shutil.rmtree(one, ignore_errors=True)
        subprocess.run([str(BIN / "ordnance"), "score", server.url("cut.tif"), "--model", str(model), "-o",
                        str(one), "--max-tiles", "1", "--no-progress", "--no-review"], check=True,
                       capture_output=True)  # fmt: skip
        first = server.bytes_sent
    size = cog.stat().st_size
    return {
        "cog_px": side, "cog_bytes": size, "windows": local["windows"],
        "bytes_scoring_all": whole, "bytes_one_window": first,
        "same_candidates": local["rows"] == remote["rows"], "candidates": local["candidates"],
        "ha_per_h_local": local["ha_per_h"], "ha_per_h_url": remote["ha_per_h"],
    }  # fmt: skip


def capacity(results: dict) -> list[dict]:
    """Node-hours for a million hectares from the measured rates (one node of this machine's kind)."""
    singles = [r for r in results["runs"] if not r["cluster"]]
    single = sum(r["ha_per_h"] for r in singles) / len(singles)
    best = max((r for r in results["runs"] if r["cluster"]), key=lambda r: r["ha_per_h"])
    cores = results["cores"]
    plan = []
    for label, per_node in (
        (f"this {cores}-core CPU node, one process", single),
        (f"this {cores}-core CPU node on Ray ({best['workers']} worker(s))", best["ha_per_h"]),
    ):
        node_hours = TERRITORY_HA / per_node
        plan.append({"node": label, "ha_per_h": per_node, "node_hours": node_hours,
                     "nodes_for_a_season": node_hours / (90 * 20)})  # fmt: skip
    return plan


def report(results: dict) -> str:
    runs = results["runs"]
    singles = [r for r in runs if not r["cluster"]]
    base = sum(r["ha_per_h"] for r in singles) / len(singles)
    base_wall = sum(r["wall_s"] for r in singles) / len(singles)
    lines = [
        f"{results['mosaic_px']:,}² px mosaic at 1 cm ({runs[0]['ha']:.2f} ha, {runs[0]['windows']} windows), model "
        f"`{results['model']}`, {results['threads']} ONNX Runtime threads in total; {results['machine']}; Ray "
        f"{results['ray_version']} head node on 127.0.0.1; {results['date']}.",
        "",
        "| run | workers x threads | wall (s) | ha/h | against one process | extra ms per window | outside the "
        "workers, ms per window | candidates | same candidates as one process |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        same = "yes" if r["same_as_single"] else "no"
        extra = outside = ""
        if r["cluster"]:
            extra = f"{(r['wall_s'] - base_wall) / r['windows'] * 1000:.1f}"
            # the command's wall time less each worker's time in its blocks: joining, actors' start, the model's
            # transfer, scheduling and the records' return
            busy = r["cluster_manifest"]["worker_seconds"]["busy_s"] / r["workers"]
            outside = f"{(r['wall_s'] - busy) / r['windows'] * 1000:.1f}"
        lines.append(
            f"| {r['name']} | {r['workers']} x {r['threads'] // r['workers']} | {r['wall_s']:.0f} | "
            f"{r['ha_per_h']:.1f} | {r['ha_per_h'] / base:.3f} | {extra} | {outside} | {r['candidates']} | {same} |"
        )
    url = results.get("url")
    if url:
        lines += [
            "",
            f"By URL (a {url['cog_px']:,}² px COG, {url['cog_bytes'] / 1e6:.1f} MB, {url['windows']} windows, "
            "served by a local range-request HTTP server):",
            "",
            "| read | bytes | share of the file |",
            "| --- | --- | --- |",
            f"| `ordnance score --max-tiles 1` (one window) | {url['bytes_one_window']:,} | "
            f"{url['bytes_one_window'] / url['cog_bytes']:.3f} |",
            f"| `ordnance score` (every window) | {url['bytes_scoring_all']:,} | "
            f"{url['bytes_scoring_all'] / url['cog_bytes']:.3f} |",
            "",
            f"Candidates by URL equal the local file's: {'yes' if url['same_candidates'] else 'no'} "
            f"({url['candidates']}); ha/h {url['ha_per_h_url']:.1f} by URL, {url['ha_per_h_local']:.1f} from disk.",
        ]
    lines += [
        "",
        f"Capacity for {TERRITORY_HA:,} ha at 1 cm (node-hours = hectares / the node's measured ha/h; a season: 90 "
        "days of 20 hours):",
        "",
        "| node | ha/h per node (measured) | node-hours | nodes for one season |",
        "| --- | --- | --- | --- |",
    ]
    for row in results["capacity"]:
        lines.append(f"| {row['node']} | {row['ha_per_h']:.1f} | {row['node_hours']:,.0f} | "
                     f"{row['nodes_for_a_season']:,.1f} |")  # fmt: skip
    lines.append("| a GPU node | not measured | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "experiments/models/synthetic.int8.onnx")
    parser.add_argument("--mosaic", type=Path, default=None, help="default: a generated tiled mosaic of --size")
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--url-side", type=int, default=4096, help="side of the COG scored by URL, px")
    parser.add_argument("--report", action="store_true", help="only write results.md and the README block")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(RESULTS.read_text())
    else:
        if not args.model.exists():
            parser.error(f"{args.model}: no such model; export one (README) or pass --model")
        import ray

        DATA.mkdir(parents=True, exist_ok=True)
        mosaic = args.mosaic or tiled_mosaic(DATA / f"tiled_{args.size}.tif", args.size)
        import rasterio

        with rasterio.open(mosaic) as src:
            size = src.width
        address, env = start_head(args.threads)
        runs = []
        try:
            plan = [("one process", None, 0), ("Ray, 1 worker", address, 1), ("Ray, 2 workers", address, 2),
                    ("one process, again", None, 0)]  # fmt: skip
            for name, cluster, workers in plan:
                runs.append(score_run(name.replace(" ", "_").replace(",", ""), str(mosaic), args.model, args.threads,
                                      env, cluster, workers) | {"name": name})  # fmt: skip
        finally:
            subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=300)
        for r in runs:
            r["same_as_single"] = r.pop("rows") == runs[0].get("rows", None) if r is not runs[0] else True
        runs[0].pop("rows", None)
        results = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            "mosaic_px": size,
            "model": args.model.name,
            "threads": args.threads,
            "ray_version": ray.__version__,
            "runs": runs,
            "url": url_check(mosaic, args.model, args.threads, args.url_side),
        }
        results["capacity"] = capacity(results)
        tmp = RESULTS.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(tmp, RESULTS)
    text = report(results)
    (HERE / "results.md").write_text(text)
    write_readme_block("<!-- cluster:begin -->", "<!-- cluster:end -->", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
