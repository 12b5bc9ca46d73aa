"""The model card: what an exported ONNX file says about itself.

The card is JSON in the ONNX ``metadata_props`` under the key ``ordnance.card``. The scorer reads it;
nobody passes a side file. Reading it needs onnxruntime only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ordnance.inference.errors import ModelError

CARD_KEY = "ordnance.card"
SCHEMA_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAMES = ("boxes", "scores", "labels")
OPERATING_POINTS = ("validated", "fallback", "unknown")


@dataclass(frozen=True)
class ModelCard:
    """Everything the field runtime needs to know about an exported detector.

    Attributes:
        class_names: Class names, index = label id in the ``labels`` output.
        tile_size_px: Fixed square input size (H = W) of the graph, in pixels.
        gsd_m: Ground sample distance the model was trained at, metres per pixel; 0 when the training
            imagery had no single GSD (frames from varying heights): the scorer then never resamples.
        score_threshold: Score of the chosen operating point; candidates below it are not reported.
        operating_point: "validated" when ``score_threshold`` reached the training recipe's precision target on
            validation data, "fallback" when validation never did and a default was used, "unknown" for files
            exported before this was recorded. The scorer warns on anything but "validated".
        overlap_px: Recommended overlap between neighbouring tiles, in model pixels. It must exceed the
            largest object the model should see whole.
        band_order: 1-based source bands fed to the graph's 3 input channels, in order (R, G, B).
        source_range: Source values mapped linearly onto 0..255 for non-uint8 imagery; ``None`` means
            the source is 8-bit, or the scorer takes the range from the raster's statistics.
        input_scaling: How the graph normalises uint8 input inside (for people; the graph does it).
        test_flips: Views the graph averages per tile (1: the tile alone; 2: and its left-right flip; 4: and its
            up-down flip and both): test-time augmentation inside the graph, at that many times the compute.
        batch_size: Fixed batch of the graph, or 0 when the batch dimension is dynamic.
        max_detections: K, the fixed number of rows of each output per image.
        item_size_m: Typical item size per class in metres (footprints, match tolerances).
        model_name: Detector architecture name.
        model_version: Version string of this trained model.
        weights_sha256: sha256 of the PyTorch state dict the file was exported from.
        mlflow_run_id: The training run, when tracked.
        config_sha256: sha256 of the resolved training config.
        exporter: Exporter used ("dynamo" or "torchscript") and its torch version.
        opset: ONNX opset of the graph.
        parity: Parity report of the export gate (matched share, score differences, recall).
        quantization: "fp32" or "int8-qdq".
        lineage: Where the weights came from: ``parent`` (the checkpoint a fine-tune started from and its
            weights' sha256) and, for a fine-tune on reviewed surveys, ``runs`` (run id, folder, the sha256 of the
            model that scored it, decisions and chips used), ``scored_by_sha256``, ``decisions`` (confirmed and
            rejected in all) and ``replay``; ``training``: the device, precision (``precision_requested`` where
            the recipe's bf16 fell back to float32), epochs and steps run against their limits, the clock budget
            and ``stopped_by: "max_time"`` when the clock ended the run before its epochs (a machine slower than
            the recipe was sized on). ``ordnance score`` copies it into the manifest.
        schema_version: Version of this card's schema.
    """

    class_names: tuple[str, ...]
    tile_size_px: int
    gsd_m: float
    score_threshold: float = 0.3
    operating_point: str = "unknown"
    overlap_px: int = 96
    band_order: tuple[int, ...] = (1, 2, 3)
    source_range: tuple[float, float] | None = None
    input_scaling: str = "uint8 RGB; graph divides by 255 and applies ImageNet mean/std"
    test_flips: int = 1
    batch_size: int = 1
    max_detections: int = 300
    item_size_m: dict[str, float] = field(default_factory=dict)
    model_name: str = "unknown"
    model_version: str = "0"
    weights_sha256: str = ""
    mlflow_run_id: str = ""
    config_sha256: str = ""
    exporter: str = ""
    opset: int = 0
    parity: dict[str, Any] = field(default_factory=dict)
    quantization: str = "fp32"
    lineage: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.class_names or not all(isinstance(n, str) and n for n in self.class_names):
            raise ValueError("class_names must be a list of one or more non-empty names")
        if not (isinstance(self.score_threshold, int | float) and 0 < self.score_threshold <= 1):
            raise ValueError(f"score_threshold must be a number in (0, 1], got {self.score_threshold!r}")
        if self.test_flips not in (1, 2, 4):
            raise ValueError(f"test_flips must be 1, 2 or 4, got {self.test_flips!r}")
        if self.operating_point not in OPERATING_POINTS:
            raise ValueError(f"operating_point must be one of {OPERATING_POINTS}, got {self.operating_point!r}")
        if self.tile_size_px <= 0 or self.gsd_m < 0:
            raise ValueError("tile_size_px must be positive and gsd_m not negative")
        if not 0 <= self.overlap_px < self.tile_size_px:
            raise ValueError("overlap_px must be in [0, tile_size_px)")
        if len(self.band_order) != 3 or not all(isinstance(b, int) and b >= 1 for b in self.band_order):
            raise ValueError("band_order must name 3 source bands, numbered from 1")

    def to_json(self) -> str:
        """Serialise to the JSON stored in the ONNX metadata."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: object = None) -> ModelCard:
        """Parse a card, checking its schema version. Raises ModelError naming ``source``."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelError(f"model card is not valid JSON ({error})", source) from None
        if not isinstance(raw, dict):
            raise ModelError(f"model card is a JSON {type(raw).__name__}, not an object", source)
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ModelError(f"model card schema_version {version!r} is not supported", source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ModelError(f"model card has unknown fields {unknown}", source)
        if not isinstance(raw.get("class_names"), list):
            raise ModelError("model card class_names must be a list of names", source)
        raw["class_names"] = tuple(raw["class_names"])
        raw["band_order"] = tuple(raw["band_order"])
        if raw.get("source_range") is not None:
            raw["source_range"] = tuple(raw["source_range"])
        try:
            return cls(**raw)
        except (TypeError, ValueError) as error:
            raise ModelError(f"model card is invalid ({error})", source) from None

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def card_from_metadata(metadata: dict[str, str], source: object = None) -> ModelCard:
    """Read the card from an ONNX metadata map (``custom_metadata_map`` of onnxruntime)."""
    if CARD_KEY not in metadata:
        raise ModelError("ONNX file has no ordnance model card; export it with 'ordnance export'", source)
    return ModelCard.from_json(metadata[CARD_KEY], source)


def read_card(path: str | Path) -> ModelCard:
    """Read the model card of an exported ONNX file, with onnxruntime only."""
    from ordnance.inference.session import open_session

    return open_session(path).card
