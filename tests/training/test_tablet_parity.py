"""The tablet page's model outputs equal Python ONNX Runtime's on the same tiles, for an exported detector in
float32 and int8: onnxruntime-web (WebAssembly) in headless Chromium against onnxruntime on this CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import CHROMIUM, StaticServer, chromium, open_tablet, wait_for
from ordnance.inference.grid import tile_grid
from ordnance.inference.raster import read_tile
from ordnance.inference.session import open_session
from ordnance.inference.tablet import build_tablet
from ordnance.training.export import ExportSettings, export_checkpoint, validation_tiles
from PIL import Image

pytestmark = [
    pytest.mark.train,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"),
]
TOP = 20  # the best detections of each window compared
STRIDE = 4  # input pixels per output cell
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_data):
    """The tiny recipe trained for a few steps and exported in float32 and int8 (the int8 recall gate opened
    wide: what is tested here is the runtime, not the quantisation)."""
    from ordnance.training.cli import main

    root = tmp_path_factory.mktemp("tablet-parity")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.chdir(root)
        main(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.data_yaml", str(tiny_data),
              "--trainer.max_steps", "6", "--trainer.default_root_dir", str(root / "runs")])  # fmt: skip
        checkpoint = next(root.glob("runs/**/checkpoints/last.ckpt"))
        settings = ExportSettings(parity_tiles=4, int8=True, max_recall_drop=1.0, calibration_tiles=8)
        export_checkpoint(checkpoint, root / "tiny.onnx", settings)
    images, _ = validation_tiles(6, 256, 0.01, None, seed=21)
    mosaic = np.zeros((3, 450, 600), np.uint8)  # six synthetic scenes side by side, cut to a 600 x 450 photo
    for i, image in enumerate(images):
        r, c = divmod(i, 3)
        mosaic[:, r * 225 : r * 225 + 225, c * 200 : c * 200 + 200] = image[:, :225, :200]
    photo = root / "scene.png"  # lossless: both sides decode the very same pixels
    Image.fromarray(mosaic.transpose(1, 2, 0)).save(photo)
    return {"fp32": root / "tiny.onnx", "int8": root / "tiny.int8.onnx", "photo": photo}


def _python_outputs(model: Path, photo: Path) -> dict[int, tuple]:
    detector = open_session(model)
    card = detector.card
    out = {}
    with rasterio.open(photo) as dataset:
        for tile in tile_grid(dataset.width, dataset.height, card.tile_size_px, card.overlap_px):
            image, _ = read_tile(dataset, tile, card, None, card.tile_size_px)
            boxes, scores, labels = detector.run(image[None])
            out[tile.index] = (boxes[0], scores[0], labels[0])
    return out


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_page_outputs_equal_python_onnx_runtime(exported, kind, tmp_path):
    from playwright.sync_api import sync_playwright

    model = exported[kind]
    assert open_session(model).card.quantization.startswith(kind)
    build_tablet(tmp_path / "app", model)
    expected = _python_outputs(model, exported["photo"])
    requests: list[str] = []
    with StaticServer(tmp_path / "app", isolate=True) as server, sync_playwright() as p:
        browser = chromium(p)
        page = open_tablet(browser.new_context(), server.url("index.html?raw"), requests)
        assert page.evaluate("window.ordnanceTablet.errors") == []
        page.set_input_files("#photos", str(exported["photo"]))
        wait_for(page, "window.ordnanceTablet.photos.length === 1 && !window.ordnanceTablet.busy")
        raw = page.evaluate("window.ordnanceTablet.raw")
        browser.close()
    assert sorted(r["tile"] for r in raw) == sorted(expected)
    # Each of the best detections of a window must be in the page's output with its label, its score within 1e-3
    # and its box within 0.5 px. A barely trained model's scores lie within hundredths of each other, so in int8,
    # where the two runtimes' integer kernels round differently, a peak can move to the neighbouring output cell:
    # such detections must stay rare.
    exact, near, compared, worst_score = 0, 0, 0, 0.0
    for window in raw:
        boxes, scores, labels = expected[window["tile"]]
        page_boxes = np.array(window["boxes"]).reshape(-1, 4)
        page_scores, page_labels = np.array(window["scores"]), np.array(window["labels"])
        for i in np.argsort(-scores, kind="stable")[:TOP]:
            edge = np.abs(page_boxes - boxes[i]).max(axis=1)
            close = (page_labels == labels[i]) & (np.abs(page_scores - scores[i]) <= 1e-3)
            compared += 1
            if (close & (edge <= 0.5)).any():
                exact += 1
                worst_score = max(worst_score, np.abs(page_scores - scores[i])[close & (edge <= 0.5)].min())
            else:
                near += int((close & (edge <= STRIDE + 0.5)).any())
    assert compared == TOP * len(expected)
    print(f"{kind}: {exact} of {compared} detections equal, {near} one cell away")
    if kind == "fp32":
        assert exact == compared and worst_score <= 1e-3, (exact, near, compared)
    else:
        assert exact >= 0.95 * compared and worst_score <= 1e-3, (exact, near, compared)
