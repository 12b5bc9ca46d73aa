"""Shared fixtures: tiny data and models made by seeded code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import blob_model_bytes

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
THERMAL = SHARED / "data" / "thermal-landmines"


@pytest.fixture
def blob_model(tmp_path):
    """Factory: write a blob-finding ONNX model and return its path."""

    def make(tile_px: int = 256, *, batch: int = 1, card=None, name: str = "blob.onnx") -> Path:
        path = tmp_path / name
        path.write_bytes(blob_model_bytes(tile_px, batch=batch, card=card))
        return path

    return make


@pytest.fixture
def write_geotiff(tmp_path):
    """Factory: write a (bands, H, W) array as a tiled GeoTIFF in UTM 36N at 1 cm GSD."""

    def make(
        data: np.ndarray,
        name: str = "mosaic.tif",
        *,
        crs="EPSG:32636",
        gsd_m: float = 0.01,
        origin=(500000.0, 5600000.0),
        nodata=None,
        **profile,
    ) -> Path:
        import rasterio
        from rasterio.transform import from_origin

        path = tmp_path / name
        meta = dict(
            driver="GTiff",
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype,
            crs=crs,
            transform=from_origin(*origin, gsd_m, gsd_m),
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
            nodata=nodata,
        )
        if crs is None:
            meta.pop("crs")
            meta.pop("transform")
        meta.update(profile)
        with rasterio.open(path, "w", **meta) as dst:
            dst.write(data)
        return path

    return make
