"""An ONNX Runtime session over an exported detector, with its card."""

from __future__ import annotations

import hashlib
import logging
import os
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
    io_binding: bool = False  # inputs copied to the device once and outputs fetched through an IOBinding
    precision: str = "graph"  # "graph": the exported graph's own; "fp16": TensorRT's float16 engine

    @property
    def fixed_batch(self) -> int:
        """Batch size the graph requires, or 0 when dynamic."""
        dim = self.session.get_inputs()[0].shape[0]
        return dim if isinstance(dim, int) else 0

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = self.card.tile_size_px
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"expected uint8 (N, 3, {size}, {size}), got {images.dtype} {images.shape}")
        if self.io_binding:
            binding = self.session.io_binding()
            binding.bind_cpu_input(INPUT_NAME, np.ascontiguousarray(images))
            for name in OUTPUT_NAMES:
                binding.bind_output(name)  # allocated by the provider, copied back once below
            self.session.run_with_iobinding(binding)
            boxes, scores, labels = binding.copy_outputs_to_cpu()
        else:
            boxes, scores, labels = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.card.class_names)):
            bad = int(labels.max() if labels.max() >= len(self.card.class_names) else labels.min())
            raise ModelError(f"returns class id {bad}, but its card names {len(self.card.class_names)} classes "
                             f"{list(self.card.class_names)}", self.path)  # fmt: skip
        return boxes, scores, labels


def engine_cache_dir() -> Path:
    """Where TensorRT keeps the engines it builds (minutes each, once per model, GPU and precision)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ordnance" / "tensorrt"


def provider_options(device: str, fp16: bool = False) -> list[tuple[str, dict]]:
    """ONNX Runtime providers with their options for ``device``, most preferred first."""
    cuda = ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True})
    cpu = ("CPUExecutionProvider", {})
    if device == "cpu":
        return [cpu]
    if device == "cuda":
        return [cuda, cpu]
    if device == "tensorrt":
        trt = {"trt_fp16_enable": bool(fp16), "trt_engine_cache_enable": True,
               "trt_engine_cache_path": str(engine_cache_dir()), "trt_timing_cache_enable": True}  # fmt: skip
        return [("TensorrtExecutionProvider", trt), cuda, cpu]
    raise ValueError(device)


def open_session(path: str | Path, *, device: str = "cpu", threads: int = 0, fp16: bool = False,
                 io_binding: bool | None = None) -> DetectorSession:  # fmt: skip
    """Open an exported ONNX detector and check its contract.

    Args:
        path: The ``.onnx`` file.
        device: "cpu", "cuda" or "tensorrt"; providers that are not installed fall back to CPU (the session's
            ``provider`` says which one runs, and the scorer's manifest and output say so).
        threads: Intra-op threads; 0 lets ONNX Runtime choose (one per core).
        fp16: Let TensorRT build a float16 engine (``device="tensorrt"`` only).
        io_binding: Run through an IOBinding (inputs copied to the device once, outputs allocated there and copied
            back once); None: on a GPU provider only.

    Raises:
        ModelError: missing, corrupt, or without a valid card or the expected inputs and outputs.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError("model file does not exist", path)
    if device not in _PROVIDERS:
        raise ModelError(f"unknown device {device!r}; choose from {sorted(_PROVIDERS)}", path)
    if fp16 and device != "tensorrt":
        raise ModelError("float16 runs through TensorRT (device 'tensorrt')", path)
    available = set(ort.get_available_providers())
    wanted = provider_options(device, fp16)
    providers = [(name, options) for name, options in wanted if name in available]
    if providers[0][0] != wanted[0][0]:
        log.warning("%s is not available here; running on %s", wanted[0][0], providers[0][0])
    if providers[0][0] == "TensorrtExecutionProvider":
        engine_cache_dir().mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=[name for name, _ in providers],
            provider_options=[opts for _, opts in providers],
        )  # fmt: skip
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
    running = session.get_providers()[0]  # what ONNX Runtime really took, after its own fallbacks
    on_gpu = running != "CPUExecutionProvider"
    precision = "fp16" if fp16 and running == "TensorrtExecutionProvider" else "graph"
    return DetectorSession(session=session, card=card, path=path, sha256=file_sha256(path), provider=running,
                           io_binding=on_gpu if io_binding is None else io_binding, precision=precision)  # fmt: skip
