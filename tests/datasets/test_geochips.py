"""Chips cut from a synthetic GeoTIFF + vector truth land on the objects, on the scorer's grid."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from ordnance.datasets.geochips import read_geotiff_chips
from ordnance.datasets.records import DatasetError, load_record
from ordnance.datasets.synth.writers import write_mosaic
from ordnance.inference.grid import box_ioa, tile_grid

SIZES = {"ap_mine": 0.12, "at_mine": 0.32, "uxo": 0.3}
CLASSES = ["ap_mine", "at_mine", "uxo"]


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("survey")
    return write_mosaic(out / "survey.tif", width_px=1400, height_px=1100, seed=5, workers=1, block_px=512, patterns=8)


def truth_boxes(paths):
    import pyogrio.raw

    meta, _, _, fields = pyogrio.raw.read(paths["truth_gpkg"])
    names = list(meta["fields"])
    cols, rows = fields[names.index("col")], fields[names.index("row")]
    classes = fields[names.index("class")]
    half = np.array([SIZES[c] / 0.01 / 2 for c in classes])
    return np.c_[cols - half, rows - half, cols + half, rows + half], classes


def test_mosaic_is_georeferenced_with_collar(survey):
    with rasterio.open(survey["mosaic"]) as src:
        assert src.crs.to_epsg() == 32636 and src.res == (0.01, 0.01) and src.nodata == 0
        assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
        mask = src.dataset_mask()
        assert mask[0, 0] == 0 and mask[550, 700] == 255


def test_chips_follow_grid_and_ioa_rule(survey):
    boxes, _classes = truth_boxes(survey)
    assert len(boxes) > 5
    data = read_geotiff_chips(
        survey["mosaic"],
        survey["truth_gpkg"],
        class_names=CLASSES,
        size_m=SIZES,
        tile_px=256,
        overlap_px=64,
        min_ioa=0.5,
        negative_ratio=0.0,
    )
    grid = {(t.col_off, t.row_off): t for t in tile_grid(1400, 1100, 256, 64)}
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    owners = np.zeros(len(boxes), int)
    for record in data.records:
        tile = grid[record.window[:2]]
        assert record.core == tile.core
        x0, y0, x1, y1 = tile.core
        owners += (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
        expected = box_ioa(boxes, tile.bounds) >= 0.5
        assert len(record.labels) == expected.sum()
        sample = load_record(record)
        chip_centres = (sample.boxes[:, :2] + sample.boxes[:, 2:]) / 2 + [tile.col_off, tile.row_off]
        inside = centres[expected]
        wholly = box_ioa(boxes[expected], tile.bounds) == 1
        # boxes wholly inside land exactly on the truth centre; clipped ones move inwards
        for c in inside[wholly]:
            assert np.hypot(*(chip_centres - c).T).min() < 1e-3
    assert (owners == 1).all(), "every truth point lies in exactly one kept chip's core"


def test_vector_in_other_crs_is_reprojected(survey):
    a = read_geotiff_chips(
        survey["mosaic"],
        survey["truth_gpkg"],
        class_names=CLASSES,
        size_m=SIZES,
        tile_px=256,
        overlap_px=64,
        negative_ratio=0,
    )
    b = read_geotiff_chips(
        survey["mosaic"],
        survey["truth_geojson"],
        class_names=CLASSES,
        size_m=SIZES,
        tile_px=256,
        overlap_px=64,
        negative_ratio=0,
    )
    assert [r.window for r in a.records] == [r.window for r in b.records]
    for ra, rb in zip(a.records, b.records):
        np.testing.assert_allclose(ra.boxes_norm * 256, rb.boxes_norm * 256, atol=0.01)


def test_negatives_ratio_and_errors(survey, tmp_path):
    data = read_geotiff_chips(
        survey["mosaic"],
        survey["truth_gpkg"],
        class_names=CLASSES,
        size_m=SIZES,
        tile_px=256,
        overlap_px=64,
        negative_ratio=0.5,
    )
    n_pos = sum(1 for r in data.records if len(r.labels))
    n_all = len(tile_grid(1400, 1100, 256, 64))
    assert sum(1 for r in data.records if not len(r.labels)) == min(round(0.5 * n_pos), n_all - n_pos)
    with pytest.raises(DatasetError, match="unknown classes"):
        read_geotiff_chips(survey["mosaic"], survey["truth_gpkg"], class_names=["ap_mine"], size_m=SIZES)
    with pytest.raises(DatasetError, match="vector label file does not exist"):
        read_geotiff_chips(survey["mosaic"], tmp_path / "none.gpkg", class_names=CLASSES, size_m=SIZES)


def test_datamodule_reads_chips_and_splits_by_block(survey):
    from ordnance.datasets.datamodule import DetectionDataModule, GeoTiffSource

    source = GeoTiffSource(
        raster=str(survey["mosaic"]),
        vector=str(survey["truth_gpkg"]),
        size_m=SIZES,
        chip_px=256,
        overlap_px=64,
        negative_ratio=0.3,
        val_fraction=0.3,
        block_px=512,
    )
    dm = DetectionDataModule(
        geotiff=source, class_names=CLASSES, crop_px=128, tile_size_px=256, batch_size=2, num_workers=0
    )
    dm.setup("fit")
    train_groups = {r.group for r in dm.train_data.records}
    val_groups = {r.group for r in dm.val_data.records}
    assert train_groups and val_groups and not train_groups & val_groups, (train_groups, val_groups)
    images, boxes, _, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 128, 128) and images.dtype.is_floating_point is False
    for b in boxes:
        assert ((b >= 0) & (b <= 128)).all()
    images, boxes, _, _ = next(iter(dm.val_dataloader()))
    assert images.shape[-2:] == (256, 256)
