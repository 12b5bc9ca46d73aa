"""Torch detectors and their builders."""

from ordnance.models.detectors import (
    DEFAULT_DETECTOR,
    ExportRefused,
    backbone_weights_record,
    build_detector,
    input_scaling,
    list_detectors,
    weights_sha256,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "ExportRefused",
    "backbone_weights_record",
    "build_detector",
    "input_scaling",
    "list_detectors",
    "weights_sha256",
]
