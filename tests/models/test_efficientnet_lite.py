"""EfficientNet-Lite0, -Lite1 and -Lite2 with their ImageNet weights: each converted classifier names photographs it
never saw here, a weight file is checked before it is loaded, and the CenterNet on the features normalises its input
as the weights were trained and exports."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from ordnance.models import build_detector, input_scaling
from ordnance.models import efficientnet_lite as lite
from ordnance.models.centernet import CenterNet


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    """A centre square resized to 224 px, normalised as the Lite models were trained."""
    from PIL import Image

    h, w = image.shape[:2]
    s = min(h, w)
    crop = Image.fromarray(image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    x = torch.from_numpy(np.array(crop.resize((224, 224), Image.BICUBIC))).permute(2, 0, 1).float()[None] / 255
    return (x - torch.tensor(lite.MEAN).view(1, 3, 1, 1)) / torch.tensor(lite.STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_imagenet_weights_name_photographs(variant):
    """scikit-image's sample photographs, classified with the whole network: the cat as one of ImageNet's domestic
    cats (281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat) and the cup of coffee as 967
    espresso. Random or misloaded weights, or a block of the wrong shape or order, do not name both."""
    from skimage import data

    net = lite.EfficientNetLite(classifier=True, variant=variant).eval()
    lite.load_imagenet_weights(net, lite.IMAGENET)
    with torch.no_grad():
        cat = net.classify(_imagenet_input(data.chelsea())).softmax(1)[0]
        coffee = net.classify(_imagenet_input(data.coffee())).softmax(1)[0]
    assert int(cat.argmax()) in {281, 282, 283, 284, 285}
    assert float(cat[281:286].sum()) > 0.8
    assert int(coffee.argmax()) == 967 and float(coffee[967]) > 0.5
    untrained = lite.EfficientNetLite(classifier=True, variant=variant).eval()
    with torch.no_grad():
        assert float(untrained.classify(_imagenet_input(data.coffee())).softmax(1)[0][967]) < 0.05


def test_variants_hold_their_files_blocks():
    """Each variant's network has exactly the blocks, and the shapes, of its file: Lite1 and Lite2 one block more in
    each middle stage than Lite0 (21 against 16), Lite2 wider; their stride-16 features end at block 14."""
    for variant, blocks, stride16 in (("lite0", 16, 10), ("lite1", 21, 14), ("lite2", 21, 14)):
        state = torch.load(lite.imagenet_weights_path(variant), map_location="cpu", weights_only=True)
        net = lite.EfficientNetLite(classifier=True, variant=variant)
        own = net.state_dict()
        assert set(own) == set(state)
        assert all(own[k].shape == state[k].shape for k in own)
        assert len(net._blocks) == blocks and lite.VARIANTS[variant].feature_blocks()[2] == stride16
    with pytest.raises(ValueError, match="sha256 .* efficientnet_lite1"):
        lite.load_imagenet_weights(lite.EfficientNetLite(3, variant="lite1"), str(lite.imagenet_weights_path("lite0")))


def test_weight_file_is_checked_before_it_is_loaded(tmp_path):
    source = lite.imagenet_weights_path()
    assert source.name == lite.VARIANTS["lite0"].file
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    net = lite.EfficientNetLite(stages=3)
    lite.load_imagenet_weights(net, str(copy))  # the same file by its path
    with open(copy, "r+b") as f:  # one byte changed
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match=rf"{copy}: sha256 .* is not the ImageNet file's of efficientnet_lite0"):
        lite.load_imagenet_weights(net, str(copy))
    with pytest.raises(FileNotFoundError, match="not found"):
        lite.load_imagenet_weights(net, str(tmp_path / "absent.pth"))


def test_centernet_starts_from_the_file_and_normalises_as_it_was_trained(tmp_path, torch_seed):
    """The detector's backbone holds the file's tensors (blocks to stride 16 only), its graph subtracts 127/255 and
    divides by 128/255, its maps lie at stride 4, and the card's input scaling says so."""
    state = torch.load(lite.imagenet_weights_path(), map_location="cpu", weights_only=True)
    det = build_detector("centernet_efficientnet_lite0", num_classes=3, weights=lite.IMAGENET).eval()
    body = det.net.body.state_dict()
    assert len(det.net.body._blocks) == 11  # blocks 0-10 end at stride 16
    assert all(torch.equal(body[key], state[key]) for key in body)
    assert "_blocks.11._expand_conv.weight" not in body and "_fc.weight" not in body
    fresh = build_detector("centernet_efficientnet_lite0", num_classes=3).eval()
    assert not torch.equal(fresh.net.body._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.allclose(det.net.mean.flatten(), torch.full((3,), 127 / 255))
    assert torch.allclose(det.net.std.flatten(), torch.full((3,), 128 / 255))
    with torch.no_grad():
        maps = det.net(torch.rand(1, 3, 128, 192))
    assert maps["heatmap"].shape == (1, 3, 32, 48) and maps["size"].shape == (1, 2, 32, 48)
    assert "mean [0.498, 0.498, 0.498], std [0.502, 0.502, 0.502]" in input_scaling(det)
    assert input_scaling(build_detector("centernet_resnet10_lite", num_classes=3)).endswith("ImageNet mean/std")
    with pytest.raises(ValueError, match="stem is for ResNet"):
        CenterNet(3, backbone="efficientnet_lite0", stem="patch4")


def test_centernet_on_efficientnet_exports_to_onnx_runtime(tmp_path, torch_seed):
    import onnxruntime as ort

    det = build_detector("centernet_efficientnet_lite0", num_classes=3, weights=lite.IMAGENET).eval()
    with torch.no_grad():
        torch.nn.init.normal_(det.net.heatmap[0].weight, std=0.01)  # peaks clear of near-ties (seeds 0-2: 6 or more)
    module = det.export_module(50).eval()
    image = torch.randint(0, 255, (1, 3, 256, 256), dtype=torch.uint8)
    path = tmp_path / "effnet.onnx"
    torch.onnx.export(module, (image,), str(path), input_names=["images"], dynamo=True, opset_version=18)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": image.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in module(image)]
    top = want[1][0] > want[1][0][9] + 1e-3
    assert top.sum() >= 3
    assert np.abs(got[1][0][top] - want[1][0][top]).max() < 1e-4
    assert np.abs(got[0][0][top] - want[0][0][top]).max() < 0.25


def test_lineage_and_checkpoint_name_the_backbone_weights():
    """The lineage (and so the checkpoint and the exported card) names the weight file the backbone started from,
    with the sha256 of the file that was loaded; a backbone built without pretrained weights names none."""
    import hashlib

    from ordnance.training.task import DetectionTask

    task = DetectionTask(model="centernet_efficientnet_lite0", weights=lite.IMAGENET, tile_size_px=256)
    record = task.lineage()["backbone_weights"]
    assert record["sha256"] == hashlib.sha256(lite.imagenet_weights_path().read_bytes()).hexdigest()
    assert record["name"] == "IMAGENET1K" and record["file"] == "efficientnet-lite0-57934424.pth"
    checkpoint: dict = {"state_dict": {}}
    task.on_save_checkpoint(checkpoint)
    assert checkpoint["ordnance_lineage"]["backbone_weights"] == record
    assert "backbone_weights" not in DetectionTask(model="centernet_efficientnet_lite0", tile_size_px=256).lineage()
    lite2 = DetectionTask(model="centernet_efficientnet_lite2", weights=lite.IMAGENET, tile_size_px=256).lineage()
    assert (
        lite2["backbone_weights"]["sha256"]
        == hashlib.sha256(lite.imagenet_weights_path("lite2").read_bytes()).hexdigest()
    )
    assert lite2["backbone_weights"]["file"] == "efficientnet-lite2-9656183e.pth"
