"""An ONNX Runtime session over an exported detector, with its card."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from ordnance.inference.card import INPUT_NAME, OUTPUT_NAMES, ModelCard, card_from_metadata
from ordnance.inference.errors import ModelError

log = logging.getLogger(__name__)

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class DetectorSession:
    """A loaded detector: the ORT session, its card and the file's hash.

    ``run`` takes uint8 images (N, 3, S, S), S = card.tile_size_px, and returns boxes (N, K, 4) xyxy in
    tile pixels, scores (N, K) and labels (N, K).
    """

    session: ort.InferenceSession
    card: ModelCard
    path: Path
    sha256: str
    provider: str = "CPUExecutionProvider"

    @property
    def fixed_batch(self) -> int:
        """Batch size the graph requires, or 0 when dynamic."""
        dim = self.session.get_inputs()[0].shape[0]
        return dim if isinstance(dim, int) else 0

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = self.card.tile_size_px
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"expected uint8 (N, 3, {size}, {size}), got {images.dtype} {images.shape}")
        boxes, scores, labels = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.card.class_names)):
            bad = int(labels.max() if labels.max() >= len(self.card.class_names) else labels.min())
            raise ModelError(f"returns class id {bad}, but its card names {len(self.card.class_names)} classes "
                             f"{list(self.card.class_names)}", self.path)  # fmt: skip
        return boxes, scores, labels


def open_session(path: str | Path, *, device: str = "cpu", threads: int = 0) -> DetectorSession:
    """Open an exported ONNX detector and check its contract.

    Args:
        path: The ``.onnx`` file.
        device: "cpu", "cuda" or "tensorrt"; providers that are not installed fall back to CPU.
        threads: Intra-op threads; 0 lets ONNX Runtime choose (one per core).

    Raises:
        ModelError: missing, corrupt, or without a valid card or the expected inputs and outputs.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError("model file does not exist", path)
    if device not in _PROVIDERS:
        raise ModelError(f"unknown device {device!r}; choose from {sorted(_PROVIDERS)}", path)
    available = set(ort.get_available_providers())
    providers = [p for p in _PROVIDERS[device] if p in available]
    if providers[0] != _PROVIDERS[device][0]:
        log.warning("%s is not available here; running on %s", _PROVIDERS[device][0], providers[0])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # ORT raises its own exception types for any unreadable graph
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"not a loadable ONNX model ({first[:200]})", path) from None
    card = card_from_metadata(session.get_modelmeta().custom_metadata_map, path)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
        raise ModelError(f"graph has inputs {inputs} and outputs {outputs}, not the ordnance contract", path)
    graph_input = session.get_inputs()[0]
    size = card.tile_size_px
    if graph_input.type != "tensor(uint8)":
        raise ModelError(f"graph input is {graph_input.type}, not the contract's tensor(uint8)", path)
    shape = list(graph_input.shape)
    if len(shape) != 4 or shape[1] != 3 or any(isinstance(d, int) and d != size for d in shape[2:]):
        raise ModelError(f"graph input shape {shape} does not take the card's (N, 3, {size}, {size}) tiles", path)
    return DetectorSession(session=session, card=card, path=path, sha256=file_sha256(path), provider=providers[0])
