"""Reading model-ready tiles from rasters: band selection, scaling to uint8, masks, resampling."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from ordnance.inference.camera import CameraPose, read_pose
from ordnance.inference.card import ModelCard
from ordnance.inference.errors import InputError
from ordnance.inference.georef import gsd_m
from ordnance.inference.grid import Tile
from ordnance.inference.preprocess import pad_to_tile
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

log = logging.getLogger(__name__)


URL_SCHEMES = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}


@dataclass(frozen=True)
class RemoteFile:
    """A raster in object storage or on a web server, read through GDAL's virtual file systems.

    ``http(s)://`` goes through ``/vsicurl/`` and ``s3://``, ``gs://``, ``az://`` through ``/vsis3/``, ``/vsigs/`` and
    ``/vsiaz/`` (credentials from GDAL's usual environment variables). Reads are windowed HTTP range requests, so
    a reader of a few windows fetches those windows' blocks (a COG or tiled GeoTIFF), never the whole file.
    """

    url: str

    @classmethod
    def parse(cls, text: str) -> RemoteFile | None:
        """A RemoteFile for a URL or a ``/vsicurl/``-style path, None for anything else."""
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme in URL_SCHEMES:
            return cls(text)
        for name, prefix in URL_SCHEMES.items():
            if text.startswith(prefix):
                rest = text[len(prefix) :]
                return cls(rest if prefix == "/vsicurl/" else f"{name}://{rest}")
        return None

    @property
    def vsi(self) -> str:
        """The GDAL path of this URL."""
        scheme, rest = self.url.split("://", 1)
        prefix = URL_SCHEMES[scheme.lower()]
        return prefix + (self.url if prefix == "/vsicurl/" else rest)

    @property
    def name(self) -> str:
        """The file name: the URL's last path segment, without a query."""
        return self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    def __fspath__(self) -> str:
        return self.vsi

    def __str__(self) -> str:
        return self.url

    def identity(self) -> dict[str, Any]:
        """What tells two versions of the file apart without reading it: size, ETag and Last-Modified from a
        HEAD request (http and https; {} elsewhere, or when the server does not answer)."""
        if not self.url.lower().startswith(("http://", "https://")):
            return {}
        import urllib.request

        try:
            with urllib.request.urlopen(urllib.request.Request(self.url, method="HEAD"), timeout=30) as response:
                headers = response.headers
        except OSError:
            return {}
        found = {"size_bytes": headers.get("Content-Length"), "etag": headers.get("ETag"),
                 "last_modified": headers.get("Last-Modified")}  # fmt: skip
        return {k: v for k, v in found.items() if v}


Source = Path | RemoteFile


def source_of(text: str) -> Source:
    """An input as a manifest records it (a path or a URL) back to what opens it."""
    return RemoteFile.parse(text) or Path(text)


@dataclass(frozen=True)
class RasterInfo:
    """What the scorer needs to know about one input raster."""

    path: Source
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str | None
    epsg: int | None
    transform: tuple[float, ...]
    gsd_m: float | None
    pose: CameraPose | None = None  # frames without a map grid: the camera's pose from EXIF and XMP

    @property
    def gps_lonlat(self) -> tuple[float, float] | None:
        return (self.pose.lon, self.pose.lat) if self.pose else None


def open_raster(path: str | Path | RemoteFile) -> rasterio.DatasetReader:
    """Open a raster for reading, turning GDAL failures into one-line InputErrors."""
    remote = path if isinstance(path, RemoteFile) else RemoteFile.parse(str(path))
    if remote is not None:
        try:  # no directory listing to look for side-car files: one range request per block, nothing more
            with warnings.catch_warnings(), rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return rasterio.open(remote.vsi)
        except RasterioIOError as error:
            raise InputError(f"not a readable raster ({str(error).splitlines()[0][:160]})", remote) from None
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path)
    if not path.is_file():  # a pipe or device would block at open, or stream without end
        raise InputError("not a regular file (a folder, pipe or device)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as error:
        raise InputError(f"not a readable raster ({str(error).splitlines()[0][:160]})", path) from None


def describe(dataset: rasterio.DatasetReader) -> RasterInfo:
    """Summarise an open raster."""
    crs = dataset.crs
    has_geo = crs is not None and not dataset.transform.is_identity
    return RasterInfo(
        path=RemoteFile.parse(dataset.name) or Path(dataset.name),
        width=dataset.width,
        height=dataset.height,
        count=dataset.count,
        dtype=dataset.dtypes[0],
        crs_wkt=crs.to_wkt() if has_geo else None,
        epsg=crs.to_epsg() if has_geo else None,
        transform=tuple(dataset.transform)[:6],
        gsd_m=gsd_m(dataset.transform, crs, (dataset.width / 2, dataset.height / 2)) if has_geo else None,
        pose=None if has_geo else read_pose(dataset.tags(), dataset.tags(ns="xml:XMP").get("xml:XMP")),
    )


# About 900 ha at 3 mm or 10,000 ha at 1 cm in one file; a header beyond it is damaged or hostile, and its window
# plan alone would exhaust memory.
MAX_PIXELS = 10**12


def check_bands(dataset: rasterio.DatasetReader, card: ModelCard) -> None:
    """Raise InputError when the raster declares an impossible size or cannot supply the bands the model reads."""
    if dataset.width * dataset.height > MAX_PIXELS:
        raise InputError(
            f"declares {dataset.width} x {dataset.height} px, beyond the {MAX_PIXELS:.0e} px one mosaic may hold: "
            "the header is damaged, or the survey must be split into several files",
            dataset.name,
        )
    missing = [b for b in card.band_order if b > dataset.count]
    if missing:
        raise InputError(
            f"raster has {dataset.count} band(s) but the model reads bands {list(card.band_order)}",
            dataset.name,
        )


def value_range(dataset: rasterio.DatasetReader, card: ModelCard) -> tuple[float, float] | None:
    """The source range mapped to 0..255, or None for 8-bit input read as is."""
    if card.source_range is not None:
        return card.source_range
    if dataset.dtypes[0] == "uint8":
        return None
    stats = dataset.stats(indexes=list(card.band_order), approx=True)
    low, high = float(min(s.min for s in stats)), float(max(s.max for s in stats))
    log.info("%s: %s data scaled from [%g, %g] to 0..255", dataset.name, dataset.dtypes[0], low, high)
    return low, max(high, low + 1e-6)


def read_tile(
    dataset: rasterio.DatasetReader,
    tile: Tile,
    card: ModelCard,
    scale_range: tuple[float, float] | None,
    tile_src_px: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one grid window as model input.

    Args:
        dataset: Open raster.
        tile: Window in source pixels.
        card: The model's card (band order, tile size S).
        scale_range: From :func:`value_range`.
        tile_src_px: Source pixels per tile side; a window of this side is resampled to S x S (area average
            when shrinking, bilinear when enlarging, as training resamples its tiles). A window
            smaller than that (a raster smaller than one tile) is resampled by the same factor and padded.

    Returns:
        image (3, S, S) uint8 and valid (S, S) bool, S = card.tile_size_px. Padding and nodata, masked or
        transparent pixels are 0 in the image and False in ``valid``.
    """
    size = card.tile_size_px
    window = Window(tile.col_off, tile.row_off, tile.width, tile.height)
    out_w = min(size, round(tile.width * size / tile_src_px))
    out_h = min(size, round(tile.height * size / tile_src_px))
    if (out_w, out_h) == (tile.width, tile.height):
        resampling = Resampling.nearest
    elif out_w < tile.width:  # a finer mosaic: area averaging, as training resamples its tiles
        resampling = Resampling.average
    else:
        resampling = Resampling.bilinear
    data = dataset.read(list(card.band_order), window=window, out_shape=(3, out_h, out_w), resampling=resampling)
    mask = dataset.dataset_mask(window=window, out_shape=(out_h, out_w), resampling=Resampling.nearest) > 0
    if np.issubdtype(data.dtype, np.floating):  # NaN or infinite pixels are no data, tagged or not
        mask &= np.isfinite(data).all(axis=0)
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if scale_range is not None:
        low, high = scale_range
        data = np.clip((data.astype(np.float32) - low) * (255.0 / (high - low)), 0, 255).round()
    data = np.where(mask, data.astype(np.uint8, copy=False), 0).astype(np.uint8)
    image, valid = pad_to_tile(data, size)
    valid[:out_h, :out_w] &= mask
    return image, valid
