"""Where the compute goes, and what the tile size buys: one checkpoint exported at several tile sizes, in one run.

1. Stages: FLOPs (PyTorch's FlopCounterMode, multiply-add = 2) and float32 milliseconds (eager PyTorch, the
   machine's threads, median of ``--repeats``) of the stem, each backbone stage, the FPN, each head and the
   decoding, for one tile of each size.
2. Tile size: each size is exported through the parity gate (``ordnance export --tile-size T``, int8 beside it;
   the card's overlap is the export's default, a quarter tile up to 128 px), then
   - ``ordnance score`` of the int8 file over the throughput mosaic (``--size`` px at 1 cm, as `make
     bench-throughput`): wall time, ha/h, tiles run, and the share of computed pixels over the mosaic's;
   - bare ONNX Runtime time per tile and per megapixel of the float32 and int8 files (no I/O);
   - the accuracy benchmark's seeded survey mosaics (experiments/accuracy: three terrains at 0.5, 1 and 2 cm):
     pooled recall and false alarms per ha of the fp32 and int8 files.
   The first size is the baseline every ratio is taken against.
3. Variants (``--variants``): each detector trained two steps on the tiny synthetic recipe (configs/tiny.yaml) and
   exported at the largest tile size: GFLOPs and bare ONNX Runtime milliseconds per megapixel, float32 and int8,
   against the checkpoint's own export at that size, and the ha/h that speed predicts. Speed only: the weights
   are untrained, so accuracy is not measured here.

    .venv/bin/python experiments/tiles/run.py --ckpt runs/1/<synthetic run>/checkpoints/best-epoch=015.ckpt

Writes results.json and results.md here and the tables into experiments/README.md (``--report`` rewrites them
from results.json). Exports and scored runs go under data/ (not committed); a size already exported is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "data"
BIN = Path(sys.executable).absolute().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "throughput"))
BEGIN, END = "<!-- tiles:begin -->", "<!-- tiles:end -->"


def _stages(detector) -> dict:
    """Top-level stages of a CenterNet detector, in forward order."""
    net = detector.net
    body = net.body
    stem = [body[k] for k in ("conv1", "bn1", "relu", "maxpool") if k in body]
    stages = {"stem": stem}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        if name in body:
            stages[f"backbone {name}"] = [body[name]]
    stages["FPN"] = [net.fpn]
    stages["head: heatmap"] = [net.heatmap]
    stages["head: size"] = [net.size]
    stages["head: offset"] = [net.offset]
    return stages


def stage_costs(ckpt: Path, tile: int, repeats: int) -> dict:
    """FLOPs and eager float32 ms per stage for one tile, and the decoding after the heads."""
    import torch
    from ordnance.training.export import load_task
    from torch.utils.flop_counter import FlopCounterMode

    detector = load_task(ckpt).detector.eval()
    net = detector.net
    stages = _stages(detector)
    x = torch.zeros(1, 3, tile, tile)
    flops: dict[str, float] = {}
    clock: dict[str, list[float]] = {k: [] for k in stages}
    started: dict[str, float] = {}
    hooks = []

    def begin(name):
        return lambda module, inputs: started.__setitem__(name, time.perf_counter())

    def end(name):
        return lambda module, inputs, output: clock[name].append(time.perf_counter() - started[name])

    for name, modules in stages.items():
        hooks.append(modules[0].register_forward_pre_hook(begin(name)))
        hooks.append(modules[-1].register_forward_hook(end(name)))
    with torch.no_grad():
        counter = FlopCounterMode(display=False, depth=None)
        with counter:
            maps = net(x)
        by_module = counter.get_flop_counts()
        for name, modules in stages.items():
            total = 0
            for module in modules:
                key = next((k for k, m in net.named_modules() if m is module), None)
                total += sum(by_module.get(f"{type(net).__name__}.{key}", {}).values()) if key else 0
            flops[name] = float(total)
        decode_counter = FlopCounterMode(display=False)
        with decode_counter:
            net.decode(maps, k=300)
        flops["decoding"] = float(decode_counter.get_total_flops())
        for k in clock:
            clock[k].clear()
        decode_ms = []
        for _ in range(repeats):
            maps = net(x)
            start = time.perf_counter()
            net.decode(maps, k=300)
            decode_ms.append(time.perf_counter() - start)
    for hook in hooks:
        hook.remove()
    ms = {k: statistics.median(v) * 1000 for k, v in clock.items()}
    ms["decoding"] = statistics.median(decode_ms) * 1000
    total_ms = sum(ms.values())
    total_flops = sum(flops.values())
    return {
        "tile": tile,
        "threads": torch.get_num_threads(),
        "stages": [
            {
                "stage": k,
                "gflops": flops.get(k, 0.0) / 1e9,
                "ms": ms[k],
                "flops_share": flops.get(k, 0.0) / total_flops,
                "ms_share": ms[k] / total_ms,
            }
            for k in [*stages, "decoding"]
        ],
        "total_gflops": total_flops / 1e9,
        "total_ms": total_ms,
    }


def export(ckpt: Path, tile: int, folder: Path = DATA) -> dict[str, Path]:
    onnx = folder / f"model_{tile}.onnx"
    files = {"fp32": onnx, "int8": onnx.with_suffix(".int8.onnx")}
    if not files["fp32"].exists():
        command = [str(BIN / "ordnance"), "export", str(ckpt), "-o", str(onnx), "--tile-size", str(tile),
                   "--no-register"]  # fmt: skip
        subprocess.run(command, check=True)
    return files


def throughput(mosaic: Path, model: Path, tile: int) -> dict:
    out = DATA / f"scored_{tile}"
    command = [str(BIN / "ordnance"), "score", str(mosaic), "--model", str(model), "-o", str(out), "--no-progress",
               "--no-resume", "--no-review", "--format", "gpkg"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    return {"seconds": seconds, "tiles": manifest["tiles"], "timings": manifest["timings"],
            "area_scanned_ha": manifest["area_scanned_ha"]}  # fmt: skip


def accuracy(models: dict[str, Path], tile: int, workers: int) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("accuracy_run", HERE.parent / "accuracy" / "run.py")
    accuracy_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accuracy_run)

    accuracy_run.DATA = DATA / "accuracy"
    accuracy_run.DATA.mkdir(parents=True, exist_ok=True)
    mosaics = accuracy_run.synthetic_mosaics(workers)
    out = {}
    for tag, model in models.items():
        rows = [accuracy_run.score_and_evaluate(m, model, f"{tag}_{tile}") for m in mosaics]
        items = sum(r["items"] for r in rows)
        area = sum(r["area_ha"] for r in rows)
        out[tag] = {
            "items": items,
            "recall": sum(r["recall"] * r["items"] for r in rows) / items,
            "false_alarms_per_ha": sum(r["false_alarms_per_ha"] * r["area_ha"] for r in rows) / area,
            "rows": rows,
        }
    return out


def variant(name: str, tile: int, tiles: np.ndarray, threads: int) -> dict:
    """Speed of a detector's architecture at ``tile``: two training steps (weights untrained), then the export."""
    from flops import bare_ms_per_tile, graph_gflops
    from ordnance.training.cli import main as train

    folder = DATA / f"variant_{name}"
    ckpt = next(folder.glob("runs/**/last.ckpt"), None)
    if ckpt is None:
        train(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--model.model", name,
               "--data.data_yaml", str(DATA / "synthetic-tiny" / "data.yaml"), "--trainer.max_steps", "2",
               "--trainer.logger", json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                                               "init_args": {"save_dir": str(folder / "runs")}}),
               "--trainer.default_root_dir", str(folder / "runs")])  # fmt: skip
        ckpt = next(folder.glob("runs/**/last.ckpt"))
    files = export(ckpt, tile, folder)
    out = {"name": name, "tile": tile, "gflops_per_tile": graph_gflops(files["fp32"])["gflops_per_tile"]}
    out["bare_ms_per_mp"] = {
        k: bare_ms_per_tile(p, tiles, threads) / (tile * tile / 1e6) for k, p in files.items() if p.exists()
    }
    return out


def run(args) -> dict:
    from common import tiled_mosaic
    from flops import bare_ms_per_tile, graph_gflops
    from ordnance.inference.card import read_card

    DATA.mkdir(parents=True, exist_ok=True)
    mosaic = tiled_mosaic(DATA / f"tiled_{args.size}.tif", args.size)
    rng = np.random.default_rng(0)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "checkpoint": str(Path(args.ckpt)),
        "mosaic_px": args.size,
        "gsd_m": 0.01,
        "sizes": [],
    }
    import rasterio
    from rasterio.windows import Window

    for tile in args.tiles:
        print(f"[{time.strftime('%H:%M:%S')}] tile {tile}", flush=True)
        entry: dict = {"tile": tile, "stages": stage_costs(Path(args.ckpt), tile, args.repeats)}
        files = export(Path(args.ckpt), tile)
        card = read_card(files["fp32"])
        entry["overlap_px"] = card.overlap_px
        step = tile - card.overlap_px
        entry["computed_share"] = (tile / step) ** 2  # computed pixels over ground pixels, away from the edges
        entry["gflops_per_tile"] = graph_gflops(files["fp32"])["gflops_per_tile"]
        with rasterio.open(mosaic) as src:
            xs, ys = rng.integers(0, src.width - tile, 8), rng.integers(0, src.height - tile, 8)
            tiles = np.stack([src.read(window=Window(int(x), int(y), tile, tile)) for x, y in zip(xs, ys)])
        entry["bare_ms_per_tile"] = {k: bare_ms_per_tile(p, tiles, args.threads) for k, p in files.items()}
        entry["bare_ms_per_mp"] = {k: v / (tile * tile / 1e6) for k, v in entry["bare_ms_per_tile"].items()}
        entry["score_int8"] = throughput(mosaic, files["int8"], tile)
        entry["score_int8"]["ha_per_h"] = args.size**2 * 0.01**2 / 1e4 / (entry["score_int8"]["seconds"] / 3600)
        entry["accuracy"] = accuracy(files, tile, args.workers)
        results["sizes"].append(entry)
        save(results)
    return run_variants(args, results, mosaic)


def run_variants(args, results: dict, mosaic: Path) -> dict:
    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(1)
    if args.variants:
        tile = max(s["tile"] for s in results["sizes"])
        base = next(s for s in results["sizes"] if s["tile"] == tile)
        with rasterio.open(mosaic) as src:
            xs, ys = rng.integers(0, src.width - tile, 8), rng.integers(0, src.height - tile, 8)
            tiles = np.stack([src.read(window=Window(int(x), int(y), tile, tile)) for x, y in zip(xs, ys)])
        from flops import bare_ms_per_tile

        # the checkpoint's own export timed again on the variants' tiles, for ratios from one sample
        own = {k: DATA / f"model_{tile}{suffix}" for k, suffix in (("fp32", ".onnx"), ("int8", ".int8.onnx"))}
        results["variant_baseline_ms_per_mp"] = {
            k: bare_ms_per_tile(p, tiles, args.threads) / (tile * tile / 1e6) for k, p in own.items()
        }
        results["variants"] = []
        for name in args.variants:
            print(f"[{time.strftime('%H:%M:%S')}] variant {name}", flush=True)
            v = variant(name, tile, tiles, args.threads)
            if "int8" in v["bare_ms_per_mp"]:
                ratio = results["variant_baseline_ms_per_mp"]["int8"] / v["bare_ms_per_mp"]["int8"]
                v["predicted_ha_per_h_int8"] = base["score_int8"]["ha_per_h"] * ratio
            results["variants"].append(v)
            save(results)
    return results


def save(results: dict) -> None:
    tmp = HERE / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, HERE / "results.json")


def markdown(r: dict) -> str:
    base = r["sizes"][0]
    lines = [
        f"{r['machine']}; {r['date']}; one checkpoint ({Path(r['checkpoint']).parent.parent.name[:8]}) exported at"
        f" each tile size; throughput mosaic {r['mosaic_px']:,}² px at 1 cm; accuracy: the seeded survey mosaics of"
        " experiments/accuracy.",
        "",
        "| tile (px) | overlap (px) | computed / ground pixels | GFLOPs per tile | int8 ms per MP (bare ORT) |"
        " fp32 ms per MP | `ordnance score` int8 ha/h | speed x | pooled recall fp32 / int8 | FA/ha fp32 / int8 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in r["sizes"]:
        acc = s["accuracy"]
        lines.append(
            f"| {s['tile']} | {s['overlap_px']} | {s['computed_share']:.2f} | {s['gflops_per_tile']:.1f} | "
            f"{s['bare_ms_per_mp']['int8']:.0f} | {s['bare_ms_per_mp']['fp32']:.0f} | "
            f"{s['score_int8']['ha_per_h']:.1f} | {s['score_int8']['ha_per_h'] / base['score_int8']['ha_per_h']:.2f} | "
            f"{acc['fp32']['recall']:.3f} / {acc['int8']['recall']:.3f} | "
            f"{acc['fp32']['false_alarms_per_ha']:.0f} / {acc['int8']['false_alarms_per_ha']:.0f} |"
        )
    if r.get("variants"):
        tile = r["variants"][0]["tile"]
        base = next(s for s in r["sizes"] if s["tile"] == tile)
        own = r["variant_baseline_ms_per_mp"]
        lines += [
            "",
            f"Variants at {tile} px (untrained weights: speed only), against the checkpoint's own export at that size:",
            "",
            "| detector | GFLOPs per tile | fp32 ms per MP | int8 ms per MP | int8 speed x | predicted int8 ha/h |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| centernet_resnet18 (the checkpoint) | {base['gflops_per_tile']:.1f} |"
            f" {own['fp32']:.0f} | {own['int8']:.0f} | 1.00 | {base['score_int8']['ha_per_h']:.1f} (measured) |",
        ]
        for v in r["variants"]:
            ms = v["bare_ms_per_mp"]
            int8 = ms.get("int8")
            int8_text = f"{int8:.0f}" if int8 else "refused"
            lines.append(
                f"| {v['name']} | {v['gflops_per_tile']:.1f} | {ms['fp32']:.0f} | {int8_text}"
                f" | {own['int8'] / int8 if int8 else 0:.2f} |"
                f" {v.get('predicted_ha_per_h_int8', 0):.1f} |"
            )
    for s in r["sizes"]:
        st = s["stages"]
        lines += [
            "",
            f"Where one {st['tile']} px tile goes (PyTorch float32 eager, {st['threads']} threads): "
            f"{st['total_gflops']:.1f} GFLOPs, {st['total_ms']:.0f} ms",
            "",
            "| stage | GFLOPs | share | ms | share |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {x['stage']} | {x['gflops']:.2f} | {x['flops_share']:.1%} | {x['ms']:.1f} | {x['ms_share']:.1%} |"
            for x in st["stages"]
        ]
    return "\n".join(lines) + "\n"


def report(results: dict) -> None:
    from common import write_readme_block  # experiments/common.py

    text = markdown(results)
    (HERE / "results.md").write_text(text)
    write_readme_block(BEGIN, END, text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="a checkpoint of the synthetic recipe (1 cm)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--size", type=int, default=20000, help="throughput mosaic side, px at 1 cm")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="mosaic generation processes")
    parser.add_argument(
        "--variants", nargs="*", default=["centernet_resnet18_lite", "centernet_mobilenet_v3"], help="detectors"
    )
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from results.json")
    parser.add_argument("--variants-only", action="store_true", help="add the variants to results.json's sizes")
    args = parser.parse_args(argv)
    if args.report:
        report(json.loads((HERE / "results.json").read_text()))
        return 0
    if args.variants_only:
        results = json.loads((HERE / "results.json").read_text())
        report(run_variants(args, results, DATA / f"tiled_{results['mosaic_px']}.tif"))
        return 0
    if not args.ckpt or not args.ckpt.is_file():
        parser.error(f"--ckpt {args.ckpt}: not a checkpoint file")
    report(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
