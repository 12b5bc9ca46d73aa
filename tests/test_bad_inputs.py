"""Bad inputs and faults against every command, as one table.

Each case builds its own files in a folder of its own, runs the command in-process and asserts: a non-zero exit
that is not an uncaught exception, exactly one ``Error`` line, that line naming the file or option and the
problem, and every file the case started with byte-for-byte unchanged, with no new file anywhere (an empty
folder may be left). The expected words are written here from the case, not read from the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from click.testing import CliRunner
from helpers import blob_model_bytes, gaussian_blobs
from ordnance.inference.card import CARD_KEY, ModelCard
from ordnance.inference.cli.main import cli

ORIGIN = (500000.0, 5600000.0)
CENTRES = [(60, 60), (200, 120), (240, 250)]


@dataclass
class World:
    mosaic: Path
    model: Path
    run: Path
    truth: Path


def _geotiff(path: Path, data: np.ndarray, *, crs="EPSG:32636", gsd=0.01, transform=None, **extra) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype)
    if crs is not None:
        profile.update(crs=crs, transform=transform or from_origin(*ORIGIN, gsd, gsd))
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _points(path: Path, xy, fields: dict, *, crs="EPSG:32636", geometry_type="Point", geoms=None) -> Path:
    geoms = geoms if geoms is not None else [shapely.Point(x, y) for x, y in xy]
    pyogrio.raw.write(path, shapely.to_wkb(np.array(geoms, dtype=object)), [np.asarray(v) for v in fields.values()],
                      list(fields), crs=crs, geometry_type=geometry_type, driver="GPKG")  # fmt: skip
    return path


def _truth_xy() -> list[tuple[float, float]]:
    return [(ORIGIN[0] + (c + 0.5) * 0.01, ORIGIN[1] - (r + 0.5) * 0.01) for c, r in CENTRES]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    mosaic = _geotiff(root / "survey.tif", gaussian_blobs(300, 300, CENTRES))
    model = root / "blob.onnx"
    model.write_bytes(blob_model_bytes(256))
    run = root / "run"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(model), "-o", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    truth = _points(root / "truth.gpkg", _truth_xy(), {"class": np.array(["ap_mine"] * 3, object)})
    return World(mosaic, model, run, truth)


def _card_model(d: Path, text: str, name: str = "model.onnx") -> Path:
    import onnx

    proto = onnx.load_from_string(blob_model_bytes(256))
    for prop in proto.metadata_props:
        if prop.key == CARD_KEY:
            prop.value = text
    path = d / name
    path.write_bytes(proto.SerializeToString())
    return path


def _card(**change) -> str:
    raw = json.loads(ModelCard(class_names=("ap_mine",), tile_size_px=256, gsd_m=0.01).to_json())
    raw.update(change)
    return json.dumps(raw)


def _run_copy(w: World, d: Path) -> Path:
    return Path(shutil.copytree(w.run, d / "run"))


def _decisions(w: World, d: Path, change: dict | None = None, *, drop: str | None = None, name="decisions.geojson"):
    manifest = json.loads((w.run / "manifest.json").read_text())
    from ordnance.inference.review import run_id

    meta, _, _, fields = pyogrio.raw.read(w.run / "candidates.gpkg", layer="candidates")
    table = dict(zip(meta["fields"], fields))
    features = []
    for i in range(len(table["id"])):
        props = {"id": int(table["id"][i]), "review_status": "rejected", "run": run_id(manifest),
                 "x": float(table["x"][i]), "y": float(table["y"][i])}  # fmt: skip
        props.update(change or {})
        if drop:
            props.pop(drop)
        features.append({"type": "Feature", "geometry": None, "properties": props})
    path = d / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _score(w: World, inputs, *extra, model=None, out=None, d=None) -> list[str]:
    return ["score", *map(str, inputs), "--model", str(model or w.model), "-o", str(out or d / "out"),
            "--no-progress", *map(str, extra)]  # fmt: skip


def _torch_zip(d: Path, name: str, obj) -> Path:
    import torch

    path = d / name
    torch.save(obj, path)
    return path


def _huge_tiff(d: Path) -> Path:
    """A 200-byte TIFF whose header declares a 100,000,000 x 100,000,000 px RGB raster in one strip."""
    import struct

    side = 100_000_000
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 3, 200), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 206), (277, 3, 1, 3), (278, 4, 1, side), (279, 4, 1, 1), (284, 3, 1, 1)]  # fmt: skip
    packed = [
        struct.pack("<HHI", tag, kind, count)
        + (struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value))
        for tag, kind, count, value in entries
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(packed) + struct.pack("<I", 0)
    data = b"II*\x00" + struct.pack("<I", 8) + ifd
    data += b"\x00" * (200 - len(data)) + struct.pack("<HHH", 8, 8, 8) + b"\x00"
    return _write(d / "huge.tif", data)


def _truncated_zip(d: Path) -> Path:
    whole = _torch_zip(d, "whole.ckpt", {"state_dict": {}})
    path = d / "truncated.ckpt"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return path


# Each case: name -> function(world, case folder) -> (argv, words naming the file or option, problem regex).
# fmt: off
CASES = {
    # score: inputs
    "score/missing input": lambda w, d: (_score(w, [d / "nope.tif"], d=d), "nope.tif", r"no such file|does not exist"),
    "score/input is a folder": lambda w, d: (_score(w, [w.run], d=d), "run", r"not a (file|raster)|folder|directory"),
    "score/input is random bytes": lambda w, d: (
        _score(w, [_write(d / "noise.tif", os.urandom(4096))], d=d), "noise.tif", r"not a readable raster"),
    "score/input is empty": lambda w, d: (
        _score(w, [_write(d / "empty.tif", b"")], d=d), "empty.tif", r"empty|not a raster|cannot"),
    "score/input is text": lambda w, d: (
        _score(w, [_write(d / "notes.tif", b"hello\n" * 50)], d=d), "notes.tif", r"not a readable raster"),
    "score/input declares 10^16 px": lambda w, d: (_score(w, [_huge_tiff(d)], d=d), "huge.tif", r"beyond the"),
    "score/one band": lambda w, d: (
        _score(w, [_geotiff(d / "grey.tif", gaussian_blobs(300, 300, CENTRES)[:1])], d=d), "grey.tif", r"band"),
    "score/two inputs of one name": lambda w, d: (
        _score(w, [w.mosaic, shutil.copy(w.mosaic, _mkdir(d / "b") / "survey.tif")], d=d), "survey.tif",
        r"same (file )?name|twice"),
    "score/georeferenced and plain mixed": lambda w, d: (
        _score(w, [w.mosaic, _geotiff(d / "plain.tif", gaussian_blobs(300, 300, CENTRES), crs=None)], d=d),
        "plain.tif", r"georeferenc"),
    "score/FIFO input": lambda w, d: (_score(w, [_fifo(d / "pipe.tif")], d=d), "pipe.tif", r"not a regular file"),
    # score: model and card
    "score/missing model": lambda w, d: (_score(w, [w.mosaic], model=d / "nope.onnx", d=d), "nope.onnx",
                                          r"no such file|does not exist"),
    "score/model is random bytes": lambda w, d: (
        _score(w, [w.mosaic], model=_write(d / "junk.onnx", os.urandom(2048)), d=d), "junk.onnx",
        r"not an ONNX|cannot|invalid"),
    "score/model is empty": lambda w, d: (
        _score(w, [w.mosaic], model=_write(d / "empty.onnx", b""), d=d), "empty.onnx", r"empty|not an ONNX|cannot"),
    "score/model without a card": lambda w, d: (
        _score(w, [w.mosaic], model=_no_card(d), d=d), "nocard.onnx", r"card"),
    "score/graph input float32": lambda w, d: (
        _score(w, [w.mosaic], model=_float_input_model(d), d=d), "float.onnx", r"tensor\(float\)"),
    "score/card is a list": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, "[1, 2]"), d=d), "model.onnx", r"card"),
    "score/card is not JSON": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, "{class_names"), d=d), "model.onnx", r"card"),
    "score/card lacks class_names": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, _without("class_names")), d=d), "model.onnx", r"class_names"),
    "score/card class_names is a string": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, _card(class_names="abc")), d=d), "model.onnx", r"class_names"),
    "score/card threshold NaN": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, _card(score_threshold=float("nan"))), d=d), "model.onnx",
        r"score_threshold"),
    "score/card tile size differs from the graph": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, _card(tile_size_px=512)), d=d), "model.onnx", r"tile"),
    "score/card GSD negative": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, _card(gsd_m=-0.01)), d=d), "model.onnx", r"gsd"),
    "score/card reads a band the raster lacks": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, _card(band_order=[1, 2, 4])), d=d), "survey.tif",
        r"3 band\(s\)"),
    "score/card band order zero": lambda w, d: (
        _score(w, [w.mosaic], model=_card_model(d, _card(band_order=[0, 1, 2])), d=d), "model.onnx", r"band"),
    # score: options
    "score/threshold 2": lambda w, d: (_score(w, [w.mosaic], "--score-threshold", 2, d=d), "--score-threshold",
                                        r"\(0, 1\]"),
    "score/threshold nan": lambda w, d: (_score(w, [w.mosaic], "--score-threshold", "nan", d=d), "--score-threshold",
                                          r"\(0, 1\]"),
    "score/threshold -1": lambda w, d: (_score(w, [w.mosaic], "--score-threshold", -1, d=d), "--score-threshold",
                                         r"\(0, 1\]"),
    "score/negative overlap": lambda w, d: (_score(w, [w.mosaic], "--overlap-px", -1, d=d), "overlap", r""),
    "score/overlap beyond the tile": lambda w, d: (_score(w, [w.mosaic], "--overlap-px", 600, d=d), "overlap", r""),
    "score/1000 threads": lambda w, d: (_score(w, [w.mosaic], "--threads", 1000, d=d), "--threads", r""),
    "score/negative threads": lambda w, d: (_score(w, [w.mosaic], "--threads", -2, d=d), "--threads", r""),
    "score/negative max tiles": lambda w, d: (_score(w, [w.mosaic], "--max-tiles", -3, d=d), "--max-tiles", r""),
    "score/negative batch": lambda w, d: (_score(w, [w.mosaic], "--batch-size", -1, d=d), "--batch-size", r""),
    "score/merge ios 2": lambda w, d: (_score(w, [w.mosaic], "--merge-ios", 2, d=d), "--merge-ios", r""),
    "score/input GSD zero": lambda w, d: (_score(w, [w.mosaic], "--input-gsd-m", 0, d=d), "--input-gsd-m", r""),
    "score/input GSD nan": lambda w, d: (_score(w, [w.mosaic], "--input-gsd-m", "nan", d=d), "--input-gsd-m", r""),
    "score/ground altitude nan": lambda w, d: (_score(w, [w.mosaic], "--ground-altitude-m", "nan", d=d),
                                                "--ground-altitude-m", r"above sea level"),
    "score/ground altitude in feet?": lambda w, d: (_score(w, [w.mosaic], "--ground-altitude-m", 30000, d=d),
                                                    "--ground-altitude-m", r"above sea level"),
    "score/GSD tolerance negative": lambda w, d: (_score(w, [w.mosaic], "--gsd-tolerance", -1, d=d),
                                                   "--gsd-tolerance", r""),
    "score/unknown format": lambda w, d: (_score(w, [w.mosaic], "--format", "shp", d=d), "--format", r""),
    "score/output is a file": lambda w, d: (
        _score(w, [w.mosaic], out=_write(d / "out.txt", b"keep me"), d=d), "out.txt", r"not a folder|exists|file"),
    # evaluate
    "evaluate/missing predictions": lambda w, d: (
        ["evaluate", str(d / "nope.gpkg"), str(w.truth), "-o", str(d / "ev")], "nope.gpkg", r"no such|not exist"),
    "evaluate/missing truth": lambda w, d: (
        ["evaluate", str(w.run / "candidates.gpkg"), str(d / "nope.gpkg"), "-o", str(d / "ev")], "nope.gpkg",
        r"no such|not exist"),
    "evaluate/truth is random bytes": lambda w, d: (
        ["evaluate", str(w.run / "candidates.gpkg"), str(_write(d / "t.gpkg", os.urandom(4096))), "-o",
         str(d / "ev")], "t.gpkg", r"cannot|not a|unreadable|corrupt"),
    "evaluate/truth is lines": lambda w, d: (
        ["evaluate", str(w.run / "candidates.gpkg"), str(_lines(d)), "-o", str(d / "ev")], "lines.gpkg",
        r"point|polygon|LineString"),
    "evaluate/truth is empty": lambda w, d: (
        ["evaluate", str(w.run / "candidates.gpkg"), str(_points(d / "none.gpkg", [], {"class": np.array([], object)})),
         "-o", str(d / "ev")], "none.gpkg", r"no (truth|item|feature)|empty"),
    "evaluate/size_m as text": lambda w, d: (
        ["evaluate", str(w.run / "candidates.gpkg"), str(_points(d / "sized.gpkg", _truth_xy(), {
            "class": np.array(["ap_mine"] * 3, object), "size_m": np.array(["big"] * 3, object)})),
         "-o", str(d / "ev")], "sized.gpkg", r"size_m"),
    "evaluate/truth in another CRS far away": lambda w, d: (
        ["evaluate", str(w.run / "candidates.gpkg"), str(_points(d / "t4326.gpkg", [(30.0, 50.0)] * 3, {
            "class": np.array(["ap_mine"] * 3, object)}, crs="EPSG:4326")), "-o", str(d / "ev")], "t4326.gpkg",
        r"overlap|outside|extent|CRS"),
    "evaluate/plain predictions, projected truth": lambda w, d: (
        ["evaluate", str(_plain_run(w, d) / "candidates.gpkg"), str(w.truth), "-o", str(d / "ev")], "candidates.gpkg",
        r"georeferenc|pixel"),
    "evaluate/NaN floor": lambda w, d: (
        _evaluate(w, d, "--floor-m", "nan"), "--floor-m", r""),
    "evaluate/negative floor": lambda w, d: (
        _evaluate(w, d, "--floor-m", "-1"), "--floor-m", r""),
    "evaluate/negative size factor": lambda w, d: (
        _evaluate(w, d, "--size-factor", "-1"), "--size-factor", r""),
    "evaluate/threshold 2": lambda w, d: (
        _evaluate(w, d, "--score-threshold", "2"), "--score-threshold", r""),
    "evaluate/negative area": lambda w, d: (
        _evaluate(w, d, "--area-ha", "-1"), "--area-ha", r""),
    "evaluate/corrupt manifest beside predictions": lambda w, d: (
        ["evaluate", str(_corrupt_manifest(w, d) / "candidates.gpkg"), str(w.truth), "-o", str(d / "ev")],
        "manifest.json", r"JSON|corrupt|damaged|cannot"),
    # review import
    "import/missing decisions": lambda w, d: (["review", "import", str(_run_copy(w, d)), str(d / "nope.geojson")],
                                              "nope.geojson", r"no such|not exist"),
    "import/decisions not JSON": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_write(d / "bad.geojson", b"{not json"))], "bad.geojson",
        r"JSON"),
    "import/properties null": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_raw_decisions(d, [{"type": "Feature", "properties": None}]))],
        "raw.geojson", r"properties"),
    "import/no decisions": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_raw_decisions(d, []))], "raw.geojson", r"no decisions"),
    "import/id not an integer": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_decisions(w, d, {"id": "one"}))], "decisions.geojson",
        r"\bid\b"),
    "import/id missing": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_decisions(w, d, drop="id"))], "decisions.geojson", r"\bid\b"),
    "import/unknown status": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_decisions(w, d, {"review_status": "maybe"}))],
        "decisions.geojson", r"maybe|status"),
    "import/another run": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_decisions(w, d, {"run": "0" * 16}))], "decisions.geojson",
        r"run"),
    "import/moved coordinates": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_decisions(w, d, {"x": 1.0}))], "decisions.geojson",
        r"candidate is at"),
    "import/CSV without id": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_write(d / "d.csv", b"status,x,y\nrejected,1,2\n"))], "d.csv",
        r"\bid\b"),
    "import/latin-1 CSV": lambda w, d: (
        ["review", "import", str(_run_copy(w, d)), str(_write(d / "l.csv", "id,review_status,note\n0,rejected,"
                                                               "pr\u00e9\n".encode("latin-1")))], "l.csv",
        r"UTF-8|encoding"),
    "import/not a scored run": lambda w, d: (
        ["review", "import", str(_mkdir(d / "empty")), str(_decisions(w, d))], "empty", r"manifest|scor"),
    "import/corrupt gpkg": lambda w, d: (
        ["review", "import", str(_corrupt_gpkg(w, d)), str(_decisions(w, d))], "candidates.gpkg",
        r"damaged|corrupt|cannot|not a"),
    # review build
    "build/not a scored run": lambda w, d: (["review", "build", str(_mkdir(d / "empty"))], "empty", r"manifest|scor"),
    "build/corrupt manifest": lambda w, d: (
        ["review", "build", str(_corrupt_manifest(w, d))], "manifest.json", r"JSON|corrupt|damaged|cannot"),
    "build/corrupt gpkg": lambda w, d: (
        ["review", "build", str(_corrupt_gpkg(w, d))], "candidates.gpkg", r"damaged|corrupt|cannot|not a"),
    "build/source moved": lambda w, d: (["review", "build", str(_moved_source(w, d))], "survey.tif",
                                        r"no longer|moved|not found|no such"),
    "build/chip 60000 px": lambda w, d: (["review", "build", str(_run_copy(w, d)), "--chip-px", "60000"],
                                         "--chip-px", r""),
    # areas
    "areas/not a scored run": lambda w, d: (["areas", str(_mkdir(d / "empty"))], "empty", r"candidates.gpkg|scor"),
    "areas/no manifest": lambda w, d: (["areas", str(_without_manifest(w, d))], "run", r"manifest"),
    "areas/corrupt gpkg": lambda w, d: (["areas", str(_corrupt_gpkg(w, d))], "candidates.gpkg",
                                        r"damaged|corrupt|cannot|not a"),
    "areas/corrupt rules": lambda w, d: (["areas", str(_with_file(w, d, "hazard_areas.json", b"{"))],
                                         "hazard_areas.json", r"corrupt|edited"),
    "areas/not georeferenced": lambda w, d: (["areas", str(_plain_run(w, d))], "candidates.gpkg",
                                             r"not georeferenced"),
    "areas/negative link": lambda w, d: (["areas", str(_run_copy(w, d)), "--link-m", "ap_mine=-5"], "--link-m",
                                         r"metres"),
    "areas/link without class": lambda w, d: (["areas", str(_run_copy(w, d)), "--link-m", "15"], "--link-m",
                                              r"CLASS=METRES"),
    "areas/unknown class": lambda w, d: (["areas", str(_run_copy(w, d)), "--buffer-m", "ap_mines=10"], "--buffer-m",
                                         r"unknown class"),
    "areas/min score 2": lambda w, d: (["areas", str(_run_copy(w, d)), "--min-score", "2"], "--min-score", r"range"),
    "areas/density alpha 1": lambda w, d: (["areas", str(_run_copy(w, d)), "--density-alpha", "1"],
                                           "--density-alpha", r"range"),
    "areas/bad survey date": lambda w, d: (["areas", str(_run_copy(w, d)), "--survey-date", "29/11/2026"],
                                           "--survey-date", r"format|date"),
    # report
    "report/not a scored run": lambda w, d: (["report", str(_mkdir(d / "empty")), "--no-pdf"], "empty",
                                             r"manifest|scor"),
    "report/corrupt manifest": lambda w, d: (["report", str(_corrupt_manifest(w, d)), "--no-pdf"], "manifest.json",
                                             r"JSON|corrupt|damaged|cannot"),
    "report/evaluation not JSON": lambda w, d: (
        ["report", str(_run_copy(w, d)), "--no-pdf", "--evaluation", str(_write(d / "e.json", b"not json"))],
        "e.json", r"evaluation"),
    # export
    "export/missing checkpoint": lambda w, d: (["export", str(d / "nope.ckpt"), "-o", str(d / "m.onnx")],
                                               "nope.ckpt", r"no such|not exist"),
    "export/random bytes": lambda w, d: (
        ["export", str(_write(d / "junk.ckpt", os.urandom(4096))), "-o", str(d / "m.onnx")], "junk.ckpt",
        r"checkpoint"),
    "export/empty file": lambda w, d: (
        ["export", str(_write(d / "empty.ckpt", b"")), "-o", str(d / "m.onnx")], "empty.ckpt", r"checkpoint|empty"),
    "export/torch file that is no checkpoint": lambda w, d: (
        ["export", str(_torch_zip(d, "plain.pt", {"a": 1})), "-o", str(d / "m.onnx")], "plain.pt", r"checkpoint"),
    "export/truncated zip": lambda w, d: (
        ["export", str(_truncated_zip(d)), "-o", str(d / "m.onnx")], "truncated.ckpt", r"checkpoint|truncated"),
}
# fmt: on


def _evaluate(w: World, d: Path, *options: str) -> list[str]:
    """``ordnance evaluate`` of the world's run against its truth, with extra options."""
    return ["evaluate", str(w.run / "candidates.gpkg"), str(w.truth), "-o", str(d / "ev"), *options]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _no_card(d: Path) -> Path:
    import onnx

    proto = onnx.load_from_string(blob_model_bytes(256))
    keep = [p for p in proto.metadata_props if p.key != CARD_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    return _write(d / "nocard.onnx", proto.SerializeToString())


def _float_input_model(d: Path) -> Path:
    """The blob model behind a float32 input (cast to uint8 inside): outside the uint8 contract."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load_from_string(blob_model_bytes(256))
    graph = proto.graph
    name = graph.input[0].name
    for node in graph.node:
        node.input[:] = [f"{name}_u8" if i == name else i for i in node.input]
    graph.node.insert(0, helper.make_node("Cast", [name], [f"{name}_u8"], to=TensorProto.UINT8))
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    return _write(d / "float.onnx", proto.SerializeToString())


def _without(field: str) -> str:
    raw = json.loads(_card())
    raw.pop(field)
    return json.dumps(raw)


def _lines(d: Path) -> Path:
    xy = _truth_xy()
    geoms = [shapely.LineString([p, (p[0] + 0.1, p[1])]) for p in xy]
    return _points(d / "lines.gpkg", xy, {"class": np.array(["ap_mine"] * 3, object)}, geometry_type="LineString",
                   geoms=geoms)  # fmt: skip


def _raw_decisions(d: Path, features: list) -> Path:
    return _write(d / "raw.geojson", json.dumps({"type": "FeatureCollection", "features": features}).encode())


def _corrupt_manifest(w: World, d: Path) -> Path:
    run = _run_copy(w, d)
    (run / "manifest.json").write_text('{"inputs": [')
    return run


def _corrupt_gpkg(w: World, d: Path) -> Path:
    run = _run_copy(w, d)
    path = run / "candidates.gpkg"
    path.write_bytes(path.read_bytes()[:1500])
    return run


def _moved_source(w: World, d: Path) -> Path:
    source = _mkdir(d / "src")
    mosaic = Path(shutil.copy(w.mosaic, source / "survey.tif"))
    out = d / "moved"
    # scored without the scorer's cut of the page's images: the page must read the source, which is gone
    result = CliRunner().invoke(cli, [*_score(w, [mosaic], out=out, d=d), "--no-review", "--no-review-preview"])
    assert result.exit_code == 0, result.output
    mosaic.unlink()
    return out


def _plain_run(w: World, d: Path) -> Path:
    plain = _geotiff(d / "plain.tif", gaussian_blobs(300, 300, CENTRES), crs=None)
    out = d / "plain"
    result = CliRunner().invoke(cli, _score(w, [plain], out=out, d=d))
    assert result.exit_code == 0, result.output
    return out


def _without_manifest(w: World, d: Path) -> Path:
    run = _run_copy(w, d)
    (run / "manifest.json").unlink()
    return run


def _with_file(w: World, d: Path, name: str, data: bytes) -> Path:
    run = _run_copy(w, d)
    (run / name).write_bytes(data)
    return run


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not stat.S_ISFIFO(p.stat().st_mode)}  # fmt: skip


def test_the_table_holds_at_least_sixty_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, world, tmp_path):
    d = _mkdir(tmp_path / "case")
    argv, words, problem = CASES[case](world, d)
    before, world_before = _snapshot(d), _snapshot(world.run.parent)
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "Error" in line]
    assert len(errors) == 1, result.output
    assert words in errors[0] and re.search(problem, errors[0], re.I), errors[0]
    assert _snapshot(d) == before and _snapshot(world.run.parent) == world_before
