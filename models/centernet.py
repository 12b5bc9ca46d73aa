"""A CenterNet-style detector for tiny objects: FPN to stride 4 over a torchvision backbone, with class
heatmap, size and offset heads, and peak picking and top-k decoding that export into the ONNX graph."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from ordnance.models import efficientnet_lite
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork

STRIDE = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
BACKBONES = {
    # one basic block per stage instead of resnet18's two (torchvision's ResNet, BasicBlock, [1, 1, 1, 1])
    "resnet10": ("resnet10", RESNET_LAYERS),
    "resnet18": ("resnet18", RESNET_LAYERS),
    "resnet34": ("resnet34", {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}),
    "mobilenet_v3_large": ("mobilenet_v3_large", {"3": "0", "6": "1", "12": "2", "16": "3"}),
    # ImageNet weights from a local file (models/efficientnet_lite.py): weights "IMAGENET1K" or the file's path
    **{f"efficientnet_{v}": (f"efficientnet_{v}", {}) for v in efficientnet_lite.VARIANTS},
}
# Input normalisation each backbone's published weights were trained with (ImageNet mean/std otherwise).
NORMALISATION = {
    f"efficientnet_{v}": (efficientnet_lite.MEAN, efficientnet_lite.STD) for v in efficientnet_lite.VARIANTS
}


def _backbone(name: str, weights: str | None, stages: int = 4, stem: str = "conv7") -> nn.Module:
    """The backbone's first ``stages`` feature stages (strides 4, 8, 16, 32); the modules after the last one
    are not kept.

    ``stem``: "conv7" keeps the ResNet stem (7 x 7 convolution at stride 2, then max pooling); "patch4" replaces
    both by one 4 x 4 convolution at stride 4 (a patchify stem: the same stride-4 output, a twelfth of the
    stem's multiply-adds, and no full-resolution feature map; each 4 x 4 x 3 patch maps linearly onto 64
    channels, so no pixel is dropped)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    if not 2 <= stages <= 4:
        raise ValueError(f"stages must be 2, 3 or 4 (deepest stride 8, 16 or 32), got {stages}")
    if stem not in ("conv7", "patch4"):
        raise ValueError(f"stem must be 'conv7' or 'patch4', got {stem!r}")
    builder, layers = BACKBONES[name]
    if stem == "patch4" and not builder.startswith("resnet"):
        raise ValueError(f"the patch4 stem is for ResNet backbones, not {name!r}")
    if builder.startswith("efficientnet_"):
        body = efficientnet_lite.EfficientNetLite(stages, variant=builder.removeprefix("efficientnet_"))
        if weights is not None:
            efficientnet_lite.load_imagenet_weights(body, weights)
        return body
    if builder == "resnet10":
        if weights is not None:
            raise ValueError("resnet10 has no published weights; use weights=None or another backbone")
        model = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    else:
        model = torchvision.models.get_model(builder, weights=weights)
    if stem == "patch4":
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 4, stride=4, bias=False)
        model.maxpool = nn.Identity()
    body = model.features if name.startswith("mobilenet") else model
    return IntermediateLayerGetter(body, return_layers=dict(list(layers.items())[:stages]))


class CenterNet(nn.Module):
    """Heatmap detector at stride 4.

    Input: float images (N, 3, H, W) in [0, 1]; normalisation happens inside. With ``input_scale`` below 1
    the network first resamples the image by that factor (bilinear, inside the graph) and reports boxes in
    input pixels: for imagery whose objects are large (thermal frames), it trades resolution for speed
    without changing the tile contract. H * input_scale and W * input_scale must be multiples of 32.
    ``forward`` returns raw maps {"heatmap": (N, C, H/4, W/4) logits, "size": (N, 2, ...) log box size in
    pixels, "offset": (N, 2, ...) sub-cell centre offset}; ``decode`` turns them into the top-k boxes.

    Shape: ``stages`` backbone stages feed the FPN (4: down to stride 32; 3: stride 16), ``fpn_channels`` wide;
    each head is a 3 x 3 convolution of ``head_channels`` and a 1 x 1 output, or with ``shared_head`` one 3 x 3
    trunk feeds the three 1 x 1 outputs; ``stem`` chooses the ResNet stem (see :func:`_backbone`).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet18",
        backbone_weights: str | None = None,
        fpn_channels: int = 128,
        head_channels: int = 64,
        input_scale: float = 1.0,
        stages: int = 4,
        shared_head: bool = False,
        stem: str = "conv7",
    ) -> None:
        super().__init__()
        if not 0.1 <= input_scale <= 1.0:
            raise ValueError(f"input_scale must be in [0.1, 1], got {input_scale}")
        self.num_classes = num_classes
        self.input_scale = float(input_scale)
        # In evaluation, average the maps over the image and its flips (1: none; 2: left-right; 4: and up-down,
        # and both): test-time augmentation at that many times the compute. Not a weight: set per evaluation.
        self.test_flips = 1
        self.stride = STRIDE / self.input_scale
        self.body = _backbone(backbone, backbone_weights, stages, stem)
        self.shared_head = shared_head
        with torch.no_grad():  # in eval mode, so the probe leaves pretrained BatchNorm statistics as loaded
            self.body.eval()
            channels = [f.shape[1] for f in self.body(torch.zeros(1, 3, 64, 64)).values()]
            self.body.train()
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels)
        mean, std = NORMALISATION.get(backbone, (IMAGENET_MEAN, IMAGENET_STD))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

        def head(out: int) -> nn.Sequential:
            if shared_head:  # the 3 x 3 trunk is shared; each head is its 1 x 1 output convolution
                return nn.Sequential(nn.Conv2d(head_channels, out, 1))
            return nn.Sequential(
                nn.Conv2d(fpn_channels, head_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(head_channels, out, 1),
            )

        if shared_head:
            self.trunk = nn.Sequential(nn.Conv2d(fpn_channels, head_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.heatmap = head(num_classes)
        self.size = head(2)
        self.offset = head(2)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.01) / 0.01))
        nn.init.constant_(self.size[-1].bias, math.log(16.0))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training or self.test_flips == 1:
            return self._maps(images)
        return flip_averaged(self._maps, images, self.test_flips)

    def _maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (images - self.mean) / self.std
        if self.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        features = self.fpn(self.body(x))["0"]
        if self.shared_head:
            features = self.trunk(features)
        return {
            "heatmap": self.heatmap(features),
            "size": self.size(features),
            "offset": self.offset(features),
        }

    @staticmethod
    def decode(
        maps: dict[str, torch.Tensor], k: int = 300, stride: float = STRIDE
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k peaks of the heatmap as boxes (N, K, 4) xyxy in input pixels, scores (N, K), labels (N, K).

        One detection per location: each cell keeps its best class, and peaks are picked on that map, so
        an item never comes out twice under two classes (for a deminer that is one hazard, and a second
        box would count as a false alarm). Pure tensor ops (max over classes, max-pool peak picking, topk,
        gather): they export into the ONNX graph. Decoding is in float32 even under bf16 autocast, where
        box coordinates would otherwise round to 2-4 px.
        """
        maps = {name: value.float() for name, value in maps.items()}
        heat = torch.sigmoid(maps["heatmap"])
        n, _, h, w = heat.shape
        _, best_class, peaks = _peak_map(heat)
        scores, cell = torch.topk(peaks.reshape(n, h * w), k)
        labels = torch.gather(best_class.reshape(n, h * w), 1, cell)
        ys = torch.div(cell, w, rounding_mode="floor")
        xs = cell - ys * w
        size = maps["size"].reshape(n, 2, h * w)
        offset = maps["offset"].reshape(n, 2, h * w)
        gather = cell.unsqueeze(1).expand(n, 2, k)
        wh = torch.exp(torch.gather(size, 2, gather).clamp(max=8.0)) * (stride / STRIDE)
        off = torch.gather(offset, 2, gather)
        cx = (xs.to(heat.dtype) + off[:, 0]) * stride
        cy = (ys.to(heat.dtype) + off[:, 1]) * stride
        boxes = torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], dim=2)
        return boxes, scores, labels


FLIPS = ((False, False), (True, False), (False, True), (True, True))  # (left-right, up-down)


def flip_averaged(run, images: torch.Tensor, flips: int) -> dict[str, torch.Tensor]:
    """The maps of ``run`` averaged over ``images`` and their first ``flips - 1`` flips (2: left-right; 4: also
    up-down and both), in one batch. Each view's maps are flipped back first: heatmap probabilities are averaged
    (and returned as logits), log sizes averaged as they are, and a flipped offset ``o`` is ``1 - o`` along the
    flipped axis (a centre at ``(j + o) * stride`` in a flipped map of ``w`` cells lies at ``w - j - o`` cells)."""
    if flips not in (1, 2, 4):
        raise ValueError(f"test_flips must be 1, 2 or 4, got {flips}")
    n = images.shape[0]
    dims = [[d for d, f in ((3, fx), (2, fy)) if f] for fx, fy in FLIPS[:flips]]  # the axes each view flips
    maps = run(torch.cat([images.flip(axes) if axes else images for axes in dims]))
    views = []
    for i, (fx, fy) in enumerate(FLIPS[:flips]):
        part = {name: value[i * n : (i + 1) * n] for name, value in maps.items()}
        if dims[i]:
            part = {name: value.flip(dims[i]) for name, value in part.items()}
        ox, oy = part["offset"][:, 0:1], part["offset"][:, 1:2]
        part["offset"] = torch.cat([1 - ox if fx else ox, 1 - oy if fy else oy], dim=1)
        views.append(part)
    return average_maps(views)


def average_maps(views: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of several sets of maps of one image, aligned cell by cell: heatmap probabilities averaged (and
    returned as logits), log sizes and offsets averaged as they are. In float32."""
    heat, size, offset = 0.0, 0.0, 0.0
    for view in views:
        heat = heat + torch.sigmoid(view["heatmap"].float())
        size = size + view["size"].float()
        offset = offset + view["offset"].float()
    n = len(views)
    p = (heat / n).clamp(1e-6, 1 - 1e-6)
    return {"heatmap": torch.log(p) - torch.log1p(-p), "size": size / n, "offset": offset / n}


class MapEnsemble(nn.Module):
    """Several trained CenterNets run as one: each sees the image, and their maps are averaged cell by cell
    (:func:`average_maps`) before peak picking, so one decode ranks every location by the members' mean
    probability. An ensemble of independently trained runs scores better-calibrated, steadier maps than any one
    of them, at the members' summed compute. The members must agree on class count and output stride (the
    cells must line up); they may differ in backbone. ``test_flips`` applies to each member."""

    def __init__(self, members: list[CenterNet]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        for i, member in enumerate(members[1:], start=1):
            if member.num_classes != members[0].num_classes or member.stride != members[0].stride:
                raise ValueError(
                    f"ensemble member {i} has {member.num_classes} classes at stride {member.stride:g}, member 0"
                    f" {members[0].num_classes} at stride {members[0].stride:g}: their maps do not line up"
                )
        self.members = nn.ModuleList(members)
        self.num_classes = members[0].num_classes
        self.stride = members[0].stride
        self.input_scale = members[0].input_scale

    @property
    def test_flips(self) -> int:
        return self.members[0].test_flips

    @test_flips.setter
    def test_flips(self, flips: int) -> None:
        for member in self.members:
            member.test_flips = flips

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return average_maps([member(images) for member in self.members])


def _peak_map(heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best class score per cell, its class, and that map kept only where it is a 3 x 3 local maximum."""
    best, best_class = heat.max(dim=1, keepdim=True)
    peaks = best * (F.max_pool2d(best, 3, stride=1, padding=1) == best).to(heat.dtype)
    return best, best_class, peaks


@torch.no_grad()
def selection_margins(maps: dict[str, torch.Tensor], k: int = 300) -> torch.Tensor:
    """How firmly :meth:`CenterNet.decode` chose each of its K detections, (N, K), in score units.

    The smallest of three gaps: the detection's score over the best of its eight neighbours (which cell
    is the peak), its best class over its second (which label it gets), and its score over the first peak
    left out of the top K (whether it is kept). Discrete choices decided by less than the score tolerance
    of a parity check can legitimately come out the other way in another runtime (a flat heatmap of an
    untrained model is full of them); a parity check compares only detections chosen by more.
    """
    heat = torch.sigmoid(maps["heatmap"].float())
    n, c, h, w = heat.shape
    best, _, peaks = _peak_map(heat)
    window = F.unfold(best, 3, padding=1)  # (N, 9, H*W); padding is 0, below any sigmoid score
    window[:, 4] = 0.0
    gap = best.reshape(n, h * w) - window.max(dim=1).values
    if c > 1:
        two = heat.topk(2, dim=1).values.reshape(n, 2, h * w)
        gap = torch.minimum(gap, two[:, 0] - two[:, 1])
    flat = peaks.reshape(n, h * w)
    kept = min(k + 1, h * w)
    scores, cell = torch.topk(flat, kept)
    margins = torch.gather(gap, 1, cell[:, :k])
    if kept > k:
        margins = torch.minimum(margins, scores[:, :k] - scores[:, k : k + 1])
    return margins


def centernet_targets(
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    num_classes: int,
    out_hw: tuple[int, int],
    max_objects: int = 256,
    stride: float = STRIDE,
    radius: int = 1,
    neighbour_weight: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Training targets at ``stride`` (input pixels per output cell): Gaussian heatmaps (elliptic,
    TTFNet-style sigma), and size/offset targets at each object's centre cell and at the cells within
    ``radius`` of it (Chebyshev distance), whose offsets point from that cell to the object's centre.

    Sizes are log box sides in network pixels (input pixels times ``STRIDE / stride``). A half-buried or
    shadowed item often peaks one cell away from its true centre; with offsets learnt around the centre,
    that peak still decodes to the item's centre instead of a point outside its hit tolerance. ``mask``
    holds each entry's weight: 1 at the centre cell, ``neighbour_weight`` around it; the centre entry of
    each object comes first.

    A box with a negative label is an ignore region (an analyst never decided what lies there): it gets no
    target, and ``ignore`` (N, 1, H, W) is 1 over its cells and half its side around them (at least one cell), where
    the heatmap's negative loss is not counted.
    """
    # Built with numpy and handed over once: per-box torch operations on small tensors cost far more than the
    # arithmetic (experiments/README.md, "Training targets").
    scale = STRIDE / stride
    n = len(boxes)
    h, w = out_hw
    around = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if dy or dx]
    slots = max_objects * (1 + len(around))
    heat = np.zeros((n, num_classes, h, w), np.float32)
    ignore = np.zeros((n, 1, h, w), np.float32)
    index = np.zeros((n, slots), np.int64)
    mask = np.zeros((n, slots), np.float32)
    size = np.zeros((n, slots, 2), np.float32)
    offset = np.zeros((n, slots, 2), np.float32)
    ys = np.arange(h, dtype=np.float32).reshape(-1, 1)
    xs = np.arange(w, dtype=np.float32).reshape(1, -1)
    for i, (b, l) in enumerate(zip(boxes, labels)):
        b = b.detach().cpu().numpy().astype(np.float32, copy=False)
        l = l.detach().cpu().numpy()
        slot = 0
        for box in b[l < 0]:
            # the box and half its side around it, at least one cell: the object's whole response, shadow included
            mx, my = max(float(box[2] - box[0]) / 2, stride), max(float(box[3] - box[1]) / 2, stride)
            c0 = max(0, int(math.floor((float(box[0]) - mx) / stride)))
            r0 = max(0, int(math.floor((float(box[1]) - my) / stride)))
            c1 = min(w, int(math.ceil((float(box[2]) + mx) / stride)))
            r1 = min(h, int(math.ceil((float(box[3]) + my) / stride)))
            ignore[i, 0, r0:r1, c0:c1] = 1.0
        keep = l >= 0
        b, l = b[keep], l[keep]
        for box, label in zip(b[:max_objects], l[:max_objects]):
            bw, bh = float(box[2] - box[0]) * scale, float(box[3] - box[1]) * scale
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = float(box[0] + box[2]) / 2 / stride, float(box[1] + box[3]) / 2 / stride
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            sx, sy = max(0.54 * bw / STRIDE / 6, 0.5), max(0.54 * bh / STRIDE / 6, 0.5)
            g = np.exp(-((xs - ix) ** 2) / np.float32(2 * sx**2) - ((ys - iy) ** 2) / np.float32(2 * sy**2))
            np.maximum(heat[i, label], g, out=heat[i, label])
            log_size = (math.log(bw), math.log(bh))
            for dy, dx in [(0, 0), *around]:
                jx, jy = ix + dx, iy + dy
                if not (0 <= jx < w and 0 <= jy < h):
                    continue
                index[i, slot] = jy * w + jx
                mask[i, slot] = 1.0 if (dy, dx) == (0, 0) else neighbour_weight
                size[i, slot] = log_size
                offset[i, slot] = (cx - jx, cy - jy)
                slot += 1
    heat, ignore, index, mask, size, offset = (torch.from_numpy(a) for a in (heat, ignore, index, mask, size, offset))
    return {"heatmap": heat, "ignore": ignore, "index": index, "mask": mask, "size": size, "offset": offset}


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the processes of distributed (DDP) training; the value itself in one process.

    Losses normalised by a count (objects, target cells) divide by the count's mean over processes, so that DDP's
    average of the processes' gradients is the gradient of the whole global batch normalised by its whole count,
    as one process with that batch computes it, not a mean of per-process ratios."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def centernet_loss(maps: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Penalty-reduced focal loss on the heatmap; L1 on log-size and offset at the target cells, weighted by
    ``mask``. Cells where ``targets["ignore"]`` is 1 add no negative loss."""
    pred = torch.sigmoid(maps["heatmap"].float()).clamp(1e-4, 1 - 1e-4)
    gt = targets["heatmap"]
    pos = gt.eq(1).float()
    neg_weight = torch.pow(1 - gt, 4)
    if "ignore" in targets:
        neg_weight = neg_weight * (1 - targets["ignore"])
    pos_loss = torch.log(pred) * torch.pow(1 - pred, 2) * pos
    neg_loss = torch.log(1 - pred) * torch.pow(pred, 2) * neg_weight * (1 - pos)
    num_pos = mean_over_processes(pos.sum()).clamp(min=1)
    heat_loss = -(pos_loss.sum() + neg_loss.sum()) / num_pos
    n = gt.shape[0]
    mask = targets["mask"].unsqueeze(2)
    denom = mean_over_processes(mask.sum()).clamp(min=1)

    def at_centres(name: str) -> torch.Tensor:
        flat = maps[name].float().reshape(n, 2, -1)
        return torch.gather(flat, 2, targets["index"].unsqueeze(1).expand(n, 2, -1)).permute(0, 2, 1)

    size_loss = (F.l1_loss(at_centres("size"), targets["size"], reduction="none") * mask).sum() / denom
    offset_loss = (F.l1_loss(at_centres("offset"), targets["offset"], reduction="none") * mask).sum() / denom
    return {"heatmap": heat_loss, "size": 0.5 * size_loss, "offset": offset_loss}
