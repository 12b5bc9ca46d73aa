"""CenterNet decoding and the in-network input scale, on hand-made maps and a trained-to-fit toy."""

from __future__ import annotations

import pytest
import torch
from ordnance.models import build_detector
from ordnance.models.centernet import STRIDE, CenterNet, centernet_targets

pytestmark = pytest.mark.train


def _maps(h=16, w=16, classes=3):
    heat = torch.full((1, classes, h, w), -8.0)
    return {"heatmap": heat, "size": torch.full((1, 2, h, w), 2.0), "offset": torch.full((1, 2, h, w), 0.5)}


def test_one_detection_per_location_with_its_best_class():
    maps = _maps()
    maps["heatmap"][0, 0, 5, 7] = 2.0  # the same place under two classes: one hazard
    maps["heatmap"][0, 2, 5, 7] = 3.0
    maps["heatmap"][0, 1, 12, 3] = 1.0
    boxes, scores, labels = CenterNet.decode(maps, k=4)
    assert scores[0, :2].tolist() == pytest.approx([torch.sigmoid(torch.tensor(3.0)).item(), 0.7310586], abs=1e-6)
    assert labels[0, :2].tolist() == [2, 1]
    assert scores[0, 2] < 0.01  # nothing else stands out
    cx = (boxes[0, 0, 0] + boxes[0, 0, 2]) / 2
    cy = (boxes[0, 0, 1] + boxes[0, 0, 3]) / 2
    assert (cx.item(), cy.item()) == pytest.approx(((7 + 0.5) * STRIDE, (5 + 0.5) * STRIDE))
    assert (boxes[0, 0, 2] - boxes[0, 0, 0]).item() == pytest.approx(torch.exp(torch.tensor(2.0)).item(), rel=1e-5)


def test_decode_is_float32_under_bf16():
    maps = {k: v.to(torch.bfloat16) for k, v in _maps(64, 64).items()}
    maps["heatmap"][0, 0, 63, 62] = 4.0
    boxes, scores, _ = CenterNet.decode(maps, k=1)
    assert boxes.dtype == torch.float32 and scores.dtype == torch.float32
    assert ((boxes[0, 0, 0] + boxes[0, 0, 2]) / 2).item() == pytest.approx(62.5 * STRIDE)  # 250, exact


def test_input_scale_keeps_boxes_in_input_pixels():
    detector = build_detector("centernet_resnet18", num_classes=1, tile_size_px=320, input_scale=0.4)
    assert detector.net.stride == pytest.approx(STRIDE / 0.4)
    box = torch.tensor([[100.0, 60.0, 180.0, 120.0]])
    targets = centernet_targets([box], [torch.tensor([0])], 1, (32, 32), stride=detector.net.stride)
    index = int(targets["index"][0, 0])
    assert divmod(index, 32) == (int(90 / 10), int(140 / 10))  # centre (140, 90) px at 10 px per cell
    # network-pixel sizes: 80 x 60 input px at scale 0.4
    assert torch.exp(targets["size"][0, 0]).tolist() == pytest.approx([32.0, 24.0], rel=1e-5)
    # decoding the targets back gives the input-pixel box
    h = w = 32
    maps = {
        "heatmap": torch.where(targets["heatmap"] == 1, 5.0, -8.0),
        "size": torch.zeros(1, 2, h, w),
        "offset": torch.zeros(1, 2, h, w),
    }
    maps["size"].view(1, 2, -1)[0, :, index] = targets["size"][0, 0]
    maps["offset"].view(1, 2, -1)[0, :, index] = targets["offset"][0, 0]
    boxes, _, _ = CenterNet.decode(maps, k=1, stride=detector.net.stride)
    assert boxes[0, 0].tolist() == pytest.approx(box[0].tolist(), abs=1e-3)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_detector("centernet_resnet18", num_classes=1, tile_size_px=640, input_scale=0.33)
    with pytest.raises(ValueError, match="only supported by the CenterNet"):
        build_detector("fcos_resnet50_fpn", num_classes=1, input_scale=0.5)


def test_offsets_around_the_centre_point_at_the_item():
    """Every target cell (the centre cell and its neighbours) decodes to the item's centre, so a peak one
    cell off still lands inside the hit tolerance of a 6 px item."""
    box = torch.tensor([[41.0, 50.0, 47.0, 56.0], [200.0, 10.0, 230.0, 24.0]])
    targets = centernet_targets([box], [torch.tensor([0, 1])], 2, (64, 64))
    mask, index, offset = targets["mask"][0], targets["index"][0], targets["offset"][0]
    used = mask > 0
    assert int(used.sum()) == 18  # 9 cells per item, none clipped
    assert mask[0].item() == 1.0 and mask[9].item() == 1.0 and mask[1].item() == 0.5
    ys, xs = torch.div(index[used], 64, rounding_mode="floor"), index[used] % 64
    centres = torch.stack([(xs + offset[used, 0]) * STRIDE, (ys + offset[used, 1]) * STRIDE], 1)
    expected = torch.tensor([[44.0, 53.0]] * 9 + [[215.0, 17.0]] * 9)
    assert torch.allclose(centres, expected, atol=1e-4)
    # the centre cell holds the heatmap peak; its neighbours do not
    assert targets["heatmap"][0, 0].flatten()[index[0]] == 1.0
    assert int((targets["heatmap"][0, 0] == 1.0).sum()) == 1
    # an item at the tile edge keeps only the cells inside the map
    edge = centernet_targets([torch.tensor([[0.0, 0.0, 6.0, 6.0]])], [torch.tensor([0])], 1, (64, 64))
    assert int((edge["mask"][0] > 0).sum()) == 4


def test_selection_margins_measure_how_firmly_each_choice_was_made():
    from ordnance.models.centernet import selection_margins

    maps = _maps()
    heat = maps["heatmap"][0]
    heat[0, 2, 2] = 3.0  # a clear peak: next best neighbour and next best class are at -8
    heat[1, 8, 8] = heat[1, 8, 9] = 1.0  # a plateau: which cell is the peak is a coin toss
    heat[0, 12, 12] = heat[2, 12, 12] = 2.0  # a class tie: which label it gets is a coin toss
    heat[1, 4, 12] = 0.5
    heat[1, 4, 13] = 0.5 - 1e-3  # a neighbour just below
    _, scores, _ = CenterNet.decode(maps, k=5)
    margins = selection_margins(maps, k=5)[0]
    sig = torch.sigmoid
    by_score = {round(s, 5): m for s, m in zip(scores[0].tolist(), margins.tolist())}
    assert by_score[round(sig(torch.tensor(3.0)).item(), 5)] == pytest.approx(
        (sig(torch.tensor(3.0)) - sig(torch.tensor(-8.0))).item(), abs=1e-6
    )
    assert by_score[round(sig(torch.tensor(1.0)).item(), 5)] == 0.0
    assert by_score[round(sig(torch.tensor(2.0)).item(), 5)] == 0.0
    near = by_score[round(sig(torch.tensor(0.5)).item(), 5)]
    assert near == pytest.approx((sig(torch.tensor(0.5)) - sig(torch.tensor(0.5 - 1e-3))).item(), rel=1e-3)
    # The last of the top K is only as firm as its lead over the first peak left out.
    maps = _maps()
    maps["heatmap"][0, 0, 2, 2], maps["heatmap"][0, 1, 8, 8], maps["heatmap"][0, 2, 12, 3] = 3.0, 1.0, 0.9
    last = selection_margins(maps, k=2)[0, -1].item()
    assert last == pytest.approx((sig(torch.tensor(1.0)) - sig(torch.tensor(0.9))).item(), abs=1e-7)


def test_ignore_regions_get_no_target_and_no_background_loss():
    from ordnance.models.centernet import centernet_loss

    boxes = [torch.tensor([[8.0, 8.0, 24.0, 24.0], [40.0, 40.0, 56.0, 56.0]])]  # input pixels, stride 4
    labels = [torch.tensor([0, -1])]
    targets = centernet_targets(boxes, labels, 3, (16, 16))
    assert targets["heatmap"][0, :, 10:14, 10:14].max() == 0  # the ignore region is no item
    assert targets["heatmap"][0, 0].max() == 1.0 and targets["mask"][0].sum() == 1 + 8 * 0.5  # one item's slots
    # the box's 4 x 4 cells and half its side (2 cells) around them: 8 x 8 cells, 32..64 px
    assert targets["ignore"][0, 0].sum() == 64 and targets["ignore"][0, 0, 8:16, 8:16].all()
    maps = _maps()
    loss = centernet_loss(maps, targets)["heatmap"]
    maps["heatmap"][0, :, 10:14, 10:14] = 6.0  # a confident peak inside the ignore region costs nothing
    assert centernet_loss(maps, targets)["heatmap"].item() == pytest.approx(loss.item(), rel=1e-6)
    maps["heatmap"][0, :, 2:4, 12:14] = 6.0  # the same peak on background is penalised
    assert centernet_loss(maps, targets)["heatmap"].item() > loss.item() + 1.0


# The heatmap output's weights are drawn wide enough that an untrained map has peaks clear of near-ties (the
# patchify variant's features are flatter, so it needs a wider draw; over seeds 0-5 both give at least 6).
@pytest.mark.parametrize(
    "name, flops_share, head_std",
    [("centernet_resnet18_lite", (0.4, 0.6), 0.05), ("centernet_resnet10_lite", (0.2, 0.35), 0.2)],
)
def test_lite_variant_ends_at_stride_16_shares_its_head_and_exports(tmp_path, torch_seed, name, flops_share, head_std):
    """The lite variants: no stride-32 stage, one 3 x 3 trunk for the three heads, about half (resnet18) or a
    quarter (resnet10, patchify stem) of the default's FLOPs (PyTorch's own counter), the same map shapes, and an
    ONNX graph that ONNX Runtime runs to PyTorch's boxes, with three 1 x 1 output convolutions the int8 export
    keeps in float32."""
    import numpy as np
    import onnxruntime as ort
    from ordnance.training.export import output_convolutions
    from torch.utils.flop_counter import FlopCounterMode

    lite = build_detector(name, num_classes=3).eval()
    default = build_detector("centernet_resnet18", num_classes=3).eval()
    assert "layer4" not in dict(lite.net.body.named_children()) and hasattr(lite.net, "trunk")
    x = torch.rand(1, 3, 256, 256)
    flops = {}
    for name, detector in (("lite", lite), ("default", default)):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            maps = detector.net(x)
        flops[name] = counter.get_total_flops()
        assert {k: tuple(v.shape) for k, v in maps.items()} == {
            "heatmap": (1, 3, 64, 64), "size": (1, 2, 64, 64), "offset": (1, 2, 64, 64)}  # fmt: skip
    assert flops_share[0] < flops["lite"] / flops["default"] < flops_share[1]
    assert lite.head_prefixes() == ("net.heatmap.0.",) and "net.heatmap.0.weight" in dict(lite.named_parameters())
    with torch.no_grad():
        torch.nn.init.normal_(lite.net.heatmap[0].weight, std=head_std)  # peaks that stand out of an untrained map
    module = lite.export_module(50).eval()
    image = torch.randint(0, 255, (1, 3, 256, 256), dtype=torch.uint8)
    path = tmp_path / "lite.onnx"
    torch.onnx.export(module, (image,), str(path), input_names=["images"], dynamo=True, opset_version=18)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": image.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in module(image)]
    top = want[1][0] > want[1][0][9] + 1e-3  # the strongest detections, clear of near-ties
    assert top.sum() >= 3
    assert np.abs(got[1][0][top] - want[1][0][top]).max() < 1e-4
    assert np.abs(got[0][0][top] - want[0][0][top]).max() < 0.25
    assert len(output_convolutions(path, 4)) == 3


def test_resnet10_lite_has_one_block_per_stage_and_a_patchify_stem_that_sees_each_pixel_once():
    """centernet_resnet10_lite's stem: each stride-4 cell of its first convolution depends on exactly the 4 x 4
    pixels of its own patch (the gradient's support, measured), so the patches tile the image with no pixel left
    out or seen twice; one basic block per ResNet stage; bad stems and published weights for resnet10 refused."""
    from ordnance.models.centernet import CenterNet

    net = build_detector("centernet_resnet10_lite", num_classes=3).net
    assert [len(getattr(net.body, f"layer{i}")) for i in (1, 2, 3)] == [1, 1, 1]
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = net.body.conv1(image)
    assert out.shape[-2:] == (8, 8)
    seen = torch.zeros(32, 32)
    for i, j in ((0, 0), (3, 5), (7, 7)):
        (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), image, retain_graph=True)
        support = grad[0].abs().sum(0) > 0
        want = torch.zeros(32, 32, dtype=torch.bool)
        want[4 * i : 4 * i + 4, 4 * j : 4 * j + 4] = True
        assert torch.equal(support, want), (i, j)
        seen += support
    assert seen.max() == 1
    with pytest.raises(ValueError, match="stem"):
        CenterNet(3, stem="patch8")
    with pytest.raises(ValueError, match="resnet10 has no published weights"):
        CenterNet(3, backbone="resnet10", backbone_weights="IMAGENET1K_V1")


def _targets_by_hand(boxes, labels, num_classes, out_hw, max_objects=256, stride=STRIDE, radius=1, weight=0.5):
    """The targets' definition written out cell by cell in plain Python (no numpy), the reference for the fast
    builder."""
    import math

    scale = STRIDE / stride
    h, w = out_hw
    around = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if dy or dx]
    n, slots = len(boxes), max_objects * (1 + len(around))
    heat = [[[[0.0] * w for _ in range(h)] for _ in range(num_classes)] for _ in range(n)]
    ignore = [[[0.0] * w for _ in range(h)] for _ in range(n)]
    index, mask = [[0] * slots for _ in range(n)], [[0.0] * slots for _ in range(n)]
    size, offset = [[(0.0, 0.0)] * slots for _ in range(n)], [[(0.0, 0.0)] * slots for _ in range(n)]
    for i in range(n):
        rows = [(b.tolist(), int(c)) for b, c in zip(boxes[i].float(), labels[i])]
        for (x0, y0, x1, y1), c in rows:
            if c >= 0:
                continue
            mx, my = max((x1 - x0) / 2, stride), max((y1 - y0) / 2, stride)
            for r in range(max(0, math.floor((y0 - my) / stride)), min(h, math.ceil((y1 + my) / stride))):
                for q in range(max(0, math.floor((x0 - mx) / stride)), min(w, math.ceil((x1 + mx) / stride))):
                    ignore[i][r][q] = 1.0
        slot = 0
        for (x0, y0, x1, y1), c in [r for r in rows if r[1] >= 0][:max_objects]:
            bw, bh = (x1 - x0) * scale, (y1 - y0) * scale
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            sx, sy = max(0.54 * bw / STRIDE / 6, 0.5), max(0.54 * bh / STRIDE / 6, 0.5)
            for r in range(h):
                for q in range(w):
                    g = math.exp(-((q - ix) ** 2) / (2 * sx**2) - ((r - iy) ** 2) / (2 * sy**2))
                    heat[i][c][r][q] = max(heat[i][c][r][q], g)
            for dy, dx in [(0, 0), *around]:
                jx, jy = ix + dx, iy + dy
                if 0 <= jx < w and 0 <= jy < h:
                    index[i][slot], mask[i][slot] = jy * w + jx, 1.0 if (dy, dx) == (0, 0) else weight
                    size[i][slot], offset[i][slot] = (math.log(bw), math.log(bh)), (cx - jx, cy - jy)
                    slot += 1
    return {"heatmap": heat, "ignore": [[plane] for plane in ignore], "index": index, "mask": mask, "size": size,
            "offset": offset}  # fmt: skip


def test_targets_match_their_definition_cell_by_cell():
    """Random boxes of every kind (ignore regions, zero-width, over the edge, more than max_objects) at two
    strides: the fast builder gives the hand-written definition's targets."""
    gen = torch.Generator().manual_seed(5)
    boxes, labels = [], []
    for _ in range(3):
        xy = torch.rand(7, 2, generator=gen) * 140 - 10
        wh = torch.rand(7, 2, generator=gen) * 30
        wh[0, 0] = 0.0  # a degenerate box gets no target
        boxes.append(torch.cat([xy, xy + wh], 1))
        labels.append(torch.randint(-1, 3, (7,), generator=gen))
    for stride in (STRIDE, STRIDE / 0.5):
        got = centernet_targets(boxes, labels, 3, (32, 32), max_objects=5, stride=stride)
        want = _targets_by_hand(boxes, labels, 3, (32, 32), max_objects=5, stride=stride)
        for key in ("ignore", "index", "mask", "size", "offset"):
            assert torch.allclose(got[key].double(), torch.tensor(want[key], dtype=torch.float64), atol=1e-6), key
        assert torch.allclose(got["heatmap"].double(), torch.tensor(want["heatmap"], dtype=torch.float64), atol=1e-6)
        assert got["index"].dtype == torch.int64 and got["heatmap"].dtype == torch.float32
        assert got["mask"].sum() > 0 and got["ignore"].sum() > 0


@pytest.mark.parametrize("flips", [2, 4])
def test_flip_averaged_maps_mirror_with_the_image(flips):
    """Averaged over flips, the maps of a mirrored image are the mirrored maps: the heatmap and sizes flip with
    it, and an offset o along the flipped axis becomes 1 - o (a centre at (j + o) cells lies at w - j - o)."""
    torch.manual_seed(3)
    net = CenterNet(3).eval()
    net.test_flips = flips
    image = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        plain, mirrored, upside = net(image), net(image.flip(3)), net(image.flip(2))
        net.test_flips = 1
        alone = net(image)
    assert torch.allclose(torch.sigmoid(mirrored["heatmap"]).flip(3), torch.sigmoid(plain["heatmap"]), atol=1e-5)
    assert torch.allclose(mirrored["size"].flip(3), plain["size"], atol=1e-5)
    assert torch.allclose(1 - mirrored["offset"][:, 0].flip(2), plain["offset"][:, 0], atol=1e-5)
    assert torch.allclose(mirrored["offset"][:, 1].flip(2), plain["offset"][:, 1], atol=1e-5)
    if flips == 4:  # up-down as well
        assert torch.allclose(torch.sigmoid(upside["heatmap"]).flip(2), torch.sigmoid(plain["heatmap"]), atol=1e-5)
        assert torch.allclose(1 - upside["offset"][:, 1].flip(1), plain["offset"][:, 1], atol=1e-5)
    # and the average is not the image alone: the views were really computed
    assert (torch.sigmoid(alone["heatmap"]) - torch.sigmoid(plain["heatmap"])).abs().max() > 1e-4


def test_flips_leave_training_alone_and_average_what_the_views_give():
    torch.manual_seed(4)
    net = CenterNet(3)
    net.test_flips = 2
    image = torch.rand(2, 3, 64, 64)
    net.train()
    assert torch.equal(net(image)["heatmap"], net._maps(image)["heatmap"])  # training sees one view
    net.eval()
    with torch.no_grad():
        a, b = net._maps(image), net._maps(image.flip(3))
        averaged = net(image)
    expected = (torch.sigmoid(a["heatmap"]) + torch.sigmoid(b["heatmap"]).flip(3)) / 2
    assert torch.allclose(torch.sigmoid(averaged["heatmap"]), expected, atol=1e-6)
    assert torch.allclose(averaged["offset"][:, 0], (a["offset"][:, 0] + 1 - b["offset"][:, 0].flip(2)) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="test_flips must be 1, 2 or 4"):
        net.test_flips = 3
        net(image)


def test_map_ensemble_averages_member_probabilities_and_refuses_maps_that_do_not_line_up(torch_seed):
    from ordnance.models.centernet import MapEnsemble

    a = CenterNet(3, backbone="resnet10", stages=3, fpn_channels=32, head_channels=32, shared_head=True).eval()
    b = CenterNet(3, backbone="resnet10", stages=3, fpn_channels=32, head_channels=32, shared_head=True).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ma, mb, both = a(images), b(images), MapEnsemble([a, b])(images)
        alone = MapEnsemble([a, a])(images)
    mean = (1 / (1 + torch.exp(-ma["heatmap"])) + 1 / (1 + torch.exp(-mb["heatmap"]))) / 2
    assert torch.allclose(torch.sigmoid(both["heatmap"]), mean, atol=1e-6)
    assert torch.allclose(both["offset"], (ma["offset"] + mb["offset"]) / 2, atol=1e-6)
    # a network joined with itself says what it says alone
    assert torch.allclose(torch.sigmoid(alone["heatmap"]), torch.sigmoid(ma["heatmap"]), atol=1e-6)
    assert torch.allclose(alone["size"], ma["size"], atol=1e-6)

    halved = CenterNet(3, backbone="resnet10", stages=3, fpn_channels=32, input_scale=0.5)
    with pytest.raises(ValueError, match="member 1 has 3 classes at stride 8"):
        MapEnsemble([a, halved])
    with pytest.raises(ValueError, match="at least two"):
        MapEnsemble([a])
    detector = build_detector("ensemble", num_classes=3, members=["centernet_resnet10_lite", "centernet_resnet18"])
    assert detector.head_prefixes() == ("net.members.0.heatmap.0.", "net.members.1.heatmap.2.")
    with pytest.raises(ValueError, match="'fcos_resnet50_fpn' is not a CenterNet"):
        build_detector("ensemble", num_classes=3, members=["centernet_resnet18", "fcos_resnet50_fpn"])
