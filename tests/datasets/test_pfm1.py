"""The real PFM-1 orthophoto tiles (../shared/data/pfm1-binghamton): class mapping, flights, measured GSD."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from ordnance.datasets.records import DatasetError

PFM1 = SHARED / "data" / "pfm1-binghamton"
pytestmark = pytest.mark.skipif(not PFM1.is_dir(), reason="../shared/data/pfm1-binghamton is not here")
CLASSES = ["ap_mine", "at_mine", "uxo"]
MAP = {"pfm-1": "ap_mine", "ksf-casing": "uxo"}
FLIGHT = r"^(\w+?_\d{6}_F\d+)_"


def _raw_counts(split: str) -> Counter:
    """Class ids counted straight from the label files (data.yaml: 0 ksf-casing, 1 pfm-1)."""
    counts: Counter = Counter()
    for label in (PFM1 / split / "labels").glob("*.txt"):
        counts.update(line.split()[0] for line in label.read_text().splitlines() if line.strip())
    return counts


def test_classes_map_by_name_onto_the_project_classes():
    from ordnance.datasets.yolo import read_yolo

    data = read_yolo(PFM1 / "data.yaml", "test", class_names=CLASSES, class_map=MAP, group_pattern=FLIGHT)
    labels = Counter(int(v) for r in data.records for v in r.labels)
    raw = _raw_counts("test")
    assert labels == Counter({0: raw["1"], 2: raw["0"]})
    assert {r.group for r in data.records} == {"Phan4_200316_F02"}


def test_class_map_with_a_name_the_data_lacks_is_refused():
    from ordnance.datasets.yolo import read_yolo

    with pytest.raises(DatasetError, match="not categories of the data"):
        read_yolo(PFM1 / "data.yaml", "test", class_names=CLASSES, class_map={"pfm-2": "ap_mine"})


def test_gsd_measured_from_the_mines_matches_their_size():
    from ordnance.datasets.gsd import estimate_gsd
    from ordnance.datasets.yolo import read_yolo

    data = read_yolo(PFM1 / "data.yaml", "train", class_names=CLASSES, class_map=MAP, group_pattern=FLIGHT)
    estimate = estimate_gsd(data, "ap_mine", 0.12, 0.061)
    assert set(estimate.per_group) == {"M600_191105_F01", "M600_191105_F02", "Phan4_200316_F03", "Phan4_210414_F15"}
    # Independent check: the median longest box side (pixels) spans 120-135 mm whatever the mines' rotation.
    sides = []
    for record in data.records:
        keep = record.labels == 0
        if keep.any():
            import cv2

            h, w = cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE).shape
            norm = record.boxes_norm[keep]
            sides += np.maximum((norm[:, 2] - norm[:, 0]) * w, (norm[:, 3] - norm[:, 1]) * h).tolist()
    median_side = float(np.median(sides))
    assert 0.120 / median_side <= estimate.gsd_m <= 0.135 / median_side
    assert 0.0027 <= estimate.gsd_m <= 0.0032


def test_data_module_resamples_every_split_to_the_working_gsd():
    import yaml
    from ordnance.datasets.datamodule import DetectionDataModule

    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "pfm1.yaml").read_text())["data"]
    recipe.pop("augment"), recipe.pop("copy_paste")
    recipe.update(data_yaml=str(PFM1 / "data.yaml"), num_workers=0, batch_size=2, gsd_m=0.005, tile_size_px=512)
    module = DetectionDataModule(**recipe)
    module.setup()
    assert {r.group for r in module.val_data.records} == {"Phan4_210414_F14"}
    loader = module.test_dataloader()
    record = loader.dataset.data.records[0]
    assert "Phan4_200316_F02" in record.path.name
    image, boxes, _, _ = loader.dataset[0]
    native = loader.dataset.data[0]
    factor = recipe["source_gsd_m"] / recipe["gsd_m"]
    assert image.shape[1:] == (recipe["tile_size_px"],) * 2  # padded to the tile, as the scorer pads
    np.testing.assert_allclose(boxes.numpy(), native.boxes * factor, atol=0.6)


def test_export_reads_parity_tiles_through_the_recipe_at_the_working_gsd():
    from ordnance.datasets.yolo import read_yolo
    from ordnance.training.export import validation_tiles

    recipe = Path(__file__).resolve().parents[2] / "configs" / "pfm1.yaml"
    images, truth = validation_tiles(6, 512, 0.005, str(recipe))
    raw = read_yolo(PFM1 / "data.yaml", "valid")
    # the gate's tiles: every tile with an item first, in the split's order
    order = [i for i, r in enumerate(raw.records) if len(r.labels)]
    assert len(order) >= 6
    factor = 0.00294 / 0.005
    checked = 0
    for index, (image, boxes) in zip(order, zip(images, truth)):
        native = raw[index]
        assert len(boxes) == len(native.boxes) > 0
        np.testing.assert_allclose(boxes, native.boxes * factor, atol=0.6)
        if not native.image[-1, -1].any():  # a blank edge tile: its extent cannot be seen
            continue
        checked += 1
        h, w = native.image.shape[:2]
        filled_rows = np.nonzero(image.any(axis=(0, 2)))[0]
        filled_cols = np.nonzero(image.any(axis=(0, 1)))[0]
        assert filled_rows.max() + 1 == pytest.approx(h * factor, abs=1)
        assert filled_cols.max() + 1 == pytest.approx(w * factor, abs=1)
    assert checked >= 2


def test_copy_paste_puts_real_training_items_on_empty_training_tiles():
    import yaml
    from ordnance.datasets.augment import AugmentConfig
    from ordnance.datasets.composite import CopyPaste
    from ordnance.datasets.datamodule import DetectionDataModule

    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "pfm1.yaml").read_text())["data"]
    recipe.update(
        data_yaml=str(PFM1 / "data.yaml"),
        num_workers=0,
        augment=AugmentConfig(flips=False, rotate90=False, scale=(1.0, 1.0), colour=0, blur=0, noise=0, jpeg=0),
        copy_paste=CopyPaste(p=1.0, real_items=2, backgrounds_only=True),
    )
    module = DetectionDataModule(**recipe)
    module.setup()
    data = module.train_dataloader().dataset
    assert len(data) == sum(1 for r in module.train_data.records if len(r.labels) == 0)
    assert {"Phan4_210414_F14", "Phan4_200316_F02"}.isdisjoint({r.group for r in data.data.records})
    counts = [len(data[i][2]) for i in range(0, len(data), len(data) // 12)]
    labels = {int(v) for i in range(0, len(data), len(data) // 12) for v in data[i][2]}
    assert sum(c >= 1 for c in counts) >= 0.8 * len(counts) and max(counts) <= 2
    assert labels <= {0, 2} and 0 in labels


def test_seams_take_ground_from_empty_training_tiles_only():
    """``seams: 1``: every training image that has a quadrant free of items gets ground from other training tiles
    without items (never the valid or test flight's), and keeps its own items."""
    import yaml
    from ordnance.datasets.augment import AugmentConfig
    from ordnance.datasets.datamodule import DetectionDataModule

    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "pfm1.yaml").read_text())["data"]
    recipe.update(
        data_yaml=str(PFM1 / "data.yaml"),
        num_workers=0,
        crop_px=768,
        augment=AugmentConfig(flips=False, rotate90=False, scale=(1.0, 1.0), colour=0, blur=0, noise=0, jpeg=0),
        copy_paste=None,
        seams=1.0,
    )
    module = DetectionDataModule(**recipe)
    module.setup()
    data = module.train_dataloader().dataset
    probability, donors = data.seams
    assert probability == 1.0 and len(donors) > 100
    assert all(len(data.data.records[i].labels) == 0 for i in donors)
    assert {"Phan4_210414_F14", "Phan4_200316_F02"}.isdisjoint({data.data.records[i].group for i in donors})
    picks = [i for i, r in enumerate(data.data.records) if len(r.labels)][:6] + donors[:6]
    # The seam point is drawn anew each time: a draw whose quadrants all touch an item leaves the image whole, so each
    # image gets up to five draws (seeded here, the global generator restored after) and must be stitched in one;
    # every draw keeps all of its items.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for i in picks:
            draws = [data[i] for _ in range(5)]
            assert any(source.endswith("+seams") for *_, source in draws), i
            assert all(len(labels) == len(data.data.records[i].labels) for _, _, labels, _ in draws)
    with pytest.raises(ValueError, match="seams is a probability"):
        DetectionDataModule(**{**recipe, "seams": 1.5})


def test_group_weights_set_each_flights_share_of_an_epoch():
    """{"F03": 3} over four training flights of 153 to 183 tiles: F03 gets 3/6 of the draws, each other flight 1/6,
    whatever its size; every tile stays drawable; a pattern matching no flight is refused."""
    from ordnance.datasets.datamodule import DetectionDataModule

    def module(weights):
        m = DetectionDataModule(str(PFM1 / "data.yaml"), class_names=CLASSES, class_map=MAP, group_pattern=FLIGHT,
                                num_workers=0, group_weights=weights)  # fmt: skip
        m.setup("fit")
        return m

    m = module({"F03": 3.0})
    loader = m.train_dataloader()
    groups = np.array([r.group for r in loader.dataset.data.records])
    drawn = groups[np.array([i for _ in range(10) for i in loader.sampler])]
    shares = {g: float(np.mean(drawn == g)) for g in np.unique(groups)}
    assert len(drawn) == 10 * len(groups)
    assert abs(shares["Phan4_200316_F03"] - 0.5) < 0.03
    for g, share in shares.items():
        if g != "Phan4_200316_F03":
            assert abs(share - 1 / 6) < 0.02, (g, share)
    assert set(np.unique(drawn)) == set(np.unique(groups))
    m.group_weights = {}  # the same data, no weights: plain shuffling
    assert not hasattr(m.train_dataloader().sampler, "weights")
    m.group_weights = {"F99": 2.0}
    with pytest.raises(DatasetError, match="F99"):
        m.train_dataloader()


def test_opencv_threads_per_loader_worker():
    """``opencv_threads`` gives each loader worker a start that sets OpenCV's thread count; left at None, the
    loader has no worker start and a worker keeps OpenCV's default."""
    import cv2
    from ordnance.datasets.datamodule import DetectionDataModule

    def start(opencv_threads):
        m = DetectionDataModule(str(PFM1 / "data.yaml"), class_names=CLASSES, class_map=MAP, group_pattern=FLIGHT,
                                num_workers=1, group_weights=None, opencv_threads=opencv_threads)  # fmt: skip
        m.setup("fit")
        return m.train_dataloader().worker_init_fn

    assert start(None) is None
    before = cv2.getNumThreads()
    try:
        start(1)(0)  # what a worker runs first
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
    assert cv2.getNumThreads() == before


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"synthetic_names": ("pfm1", "unicorn")}, "does not draw"),
        ({"synthetic_names": ("leaf",)}, "must be labelled items"),
        ({"lookalike_names": ("pfm1",), "lookalike_items": 2}, "must be unlabelled look-alikes"),
    ],
)
def test_copy_paste_refuses_names_of_the_wrong_kind(names, message):
    from ordnance.datasets.composite import CopyPaste
    from ordnance.datasets.datamodule import DetectionDataModule

    cfg = CopyPaste(**{"p": 1.0, "real_items": 0, "synthetic_items": 2, **names})
    module = DetectionDataModule(
        str(PFM1 / "data.yaml"),
        class_names=CLASSES,
        class_map=MAP,
        group_pattern=FLIGHT,
        num_workers=0,
        source_gsd_m=0.00294,
        gsd_m=0.00294,
        copy_paste=cfg,
    )
    module.setup()
    with pytest.raises(DatasetError, match=message):
        module.train_dataloader()


def test_fill_regions_are_the_orthophotos_fill_not_white_things_on_the_ground():
    """The export's white fill beyond the footprint and masked-out black blocks are large and flat; glare and white
    stones are small; a pale mine is never flat white. Only the large regions are fill."""
    from ordnance.datasets.composite import fill_regions

    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (300, 400, 3), dtype=np.uint8)  # grass-like texture
    cols, rows = np.meshgrid(np.arange(400), np.arange(300))
    wedge = cols > rows + 250  # white fill beyond a slanted footprint edge
    image[wedge] = 255
    image[200:280, 20:100] = 0  # a masked-out block, 80 x 80 px
    image[100:110, 150:160] = 255  # glare on a can: 100 px
    image[50:70, 200:212] = 252  # a white stone, almost flat: 240 px
    fill = fill_regions(image, min_px=4096)
    expected = wedge.copy()
    expected[200:280, 20:100] = True
    np.testing.assert_array_equal(fill, expected)
    # on the valid flight's tiles: about a tenth of the pixels are fill, and no item lies on it
    from ordnance.datasets.records import load_record
    from ordnance.datasets.yolo import read_yolo

    data = read_yolo(PFM1 / "data.yaml", "valid", class_names=CLASSES, class_map=MAP, group_pattern=FLIGHT)
    fill_px = total_px = 0
    for record in data.records:
        sample = load_record(record)
        fill = fill_regions(sample.image)
        fill_px, total_px = fill_px + fill.sum(), total_px + fill.size
        for x0, y0, x1, y1 in np.round(sample.boxes).astype(int):
            assert not fill[y0:y1, x0:x1].any(), record.source
    assert 0.02 < fill_px / total_px < 0.5


def test_recipe_builds_its_detector_on_the_imagenet_weight_file(monkeypatch):
    """configs/pfm1.yaml as LightningCLI reads it: the EfficientNet-Lite0 CenterNet, its backbone holding the
    ImageNet file's tensors (no checkpoint to start from), the lineage naming that file."""
    import torch
    from ordnance.models import efficientnet_lite
    from ordnance.training.cli import main

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the recipe names its data relative to the repository root
    cli = main(["--config", str(repo / "configs" / "pfm1.yaml"), "--trainer.logger", "false"], run=False)
    assert cli.model.hparams.model == "centernet_efficientnet_lite0" and cli.model.hparams.init_checkpoint is None
    state = torch.load(efficientnet_lite.imagenet_weights_path(), map_location="cpu", weights_only=True)
    body = cli.model.detector.net.body.state_dict()
    assert body and all(torch.equal(body[key], state[key]) for key in body)
    assert cli.model.lineage()["backbone_weights"]["sha256"] == efficientnet_lite.VARIANTS["lite0"].sha256
