"""The three ways to run one ONNX model over one mosaic, each run in its own process by run.py:

    python methods.py ordnance|sahi|naive MOSAIC MODEL OUT_DIR THREADS

prints one JSON line: seconds, megapixels, detections, peak RSS. Torch-free (runs in the bench venv, where
SAHI is installed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import peak_rss_mb


def session(model: Path, threads: int) -> tuple[ort.InferenceSession, dict]:
    from ordnance.inference.card import card_from_metadata

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    card = card_from_metadata(sess.get_modelmeta().custom_metadata_map, model)
    return sess, card


def run_ordnance(mosaic: Path, model: Path, out: Path, threads: int) -> dict:
    """`ordnance score` as an analyst runs it: background reading, seam merge, every output written."""
    from ordnance.inference.scoring import ScoringJob, score

    result = score(
        ScoringJob(inputs=(str(mosaic),), model=model, out_dir=out, progress=False, resume=False, threads=threads)
    )
    return {"detections": result.manifest["candidates"], "tiles": result.manifest["tiles"]}


def run_sahi(mosaic: Path, model: Path, out: Path, threads: int) -> dict:
    """SAHI's sliced prediction with the same ONNX model wrapped as a SAHI DetectionModel; same slice size,
    overlap and score threshold as the card; GREEDYNMM/IOS merging (SAHI's default); no extra full-image
    pass (that would feed a 20,000 px image to a 512 px model)."""
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction

    sess, card = session(model, threads)
    side = card.tile_size_px
    input_name = sess.get_inputs()[0].name

    class OrtDetectionModel(DetectionModel):
        def load_model(self) -> None:
            self.model = sess
            self.category_mapping = {str(i): name for i, name in enumerate(card.class_names)}

        def perform_inference(self, image: np.ndarray) -> None:
            h, w = image.shape[:2]
            tile = np.zeros((1, 3, side, side), np.uint8)
            tile[0, :, :h, :w] = image.transpose(2, 0, 1)
            boxes, scores, labels = self.model.run(None, {input_name: tile})
            self._original_predictions = (boxes[0], scores[0], labels[0], h, w)

        def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list=None, full_shape_list=None
        ) -> None:
            boxes, scores, labels, h, w = self._original_predictions
            shift = (shift_amount_list or [[0, 0]])[0]
            full = full_shape_list[0] if full_shape_list else None
            keep = scores >= self.confidence_threshold
            predictions = []
            for box, s, label in zip(boxes[keep], scores[keep], labels[keep]):
                x0, y0 = max(0.0, float(box[0])), max(0.0, float(box[1]))
                x1, y1 = min(float(w), float(box[2])), min(float(h), float(box[3]))
                if x1 <= x0 or y1 <= y0:
                    continue
                predictions.append(
                    ObjectPrediction(
                        bbox=[x0, y0, x1, y1],
                        category_id=int(label),
                        category_name=card.class_names[int(label)],
                        score=float(s),
                        shift_amount=shift,
                        full_shape=full,
                    )
                )
            self._object_prediction_list_per_image = [predictions]

    detector = OrtDetectionModel(model_path=str(model), confidence_threshold=card.score_threshold, device="cpu")
    overlap = card.overlap_px / side
    result = get_sliced_prediction(
        str(mosaic),
        detector,
        slice_height=side,
        slice_width=side,
        overlap_height_ratio=overlap,
        overlap_width_ratio=overlap,
        perform_standard_pred=False,
        verbose=0,
    )
    return {
        "detections": len(result.object_prediction_list),
        "durations_s": {k: round(v, 2) for k, v in result.durations_in_seconds.items()},
    }


def run_naive(mosaic: Path, model: Path, out: Path, threads: int) -> dict:
    """Decode the whole image, run the tiles one by one, keep every detection above the threshold."""
    import rasterio
    from ordnance.inference.grid import tile_grid

    sess, card = session(model, threads)
    side = card.tile_size_px
    input_name = sess.get_inputs()[0].name
    with rasterio.open(mosaic) as src:
        image = src.read()
    kept = []
    for t in tile_grid(image.shape[2], image.shape[1], side, card.overlap_px):
        tile = np.zeros((1, 3, side, side), np.uint8)
        window = image[:, t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width]
        tile[0, :, : window.shape[1], : window.shape[2]] = window
        boxes, scores, _ = sess.run(None, {input_name: tile})
        keep = scores[0] >= card.score_threshold
        kept.append(boxes[0][keep] + [t.col_off, t.row_off, t.col_off, t.row_off])
    return {"detections": int(sum(len(k) for k in kept))}


METHODS = {"ordnance": run_ordnance, "sahi": run_sahi, "naive": run_naive}


def main() -> None:
    method, mosaic, model, out, threads = sys.argv[1:6]
    import rasterio

    with rasterio.open(mosaic) as src:
        megapixels = src.width * src.height / 1e6
    start = time.perf_counter()
    extra = METHODS[method](Path(mosaic), Path(model), Path(out), int(threads))
    seconds = time.perf_counter() - start
    report = {"method": method, "seconds": seconds, "megapixels": megapixels, "rss_mb": peak_rss_mb(), **extra}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
