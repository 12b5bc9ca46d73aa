"""Pixel <-> map coordinates, and map -> WGS84.

Pixel coordinates are continuous with the edge convention (the centre of pixel (0, 0) is (0.5, 0.5)), so
an affine geotransform maps them directly: the transform maps (0, 0) to the outer corner of the first
pixel, as GDAL and rasterio define it.
"""

from __future__ import annotations

import numpy as np
from affine import Affine
from pyproj import CRS, Geod, Transformer


def pixel_to_map(transform: Affine, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map continuous pixel coordinates (edge convention) to the raster CRS."""
    cols, rows = np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return a * cols + b * rows + c, d * cols + e * rows + f


def map_to_pixel(transform: Affine, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pixel_to_map`: continuous (col, row) of map coordinates."""
    return pixel_to_map(~transform, xs, ys)


def to_wgs84(crs: CRS | str, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) in degrees of points in ``crs``."""
    transformer = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
    lon, lat = transformer.transform(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    return np.asarray(lon), np.asarray(lat)


def ground_gsd_m(transform: Affine, crs: CRS | str, col: float, row: float) -> tuple[float, float]:
    """Ground size of one pixel (along columns, along rows) in metres at pixel (col, row): the geodesic
    distance on the WGS84 ellipsoid between the pixel's centre and its neighbours. True in any CRS (degrees,
    feet, Web Mercator's stretched metres) and for rotated transforms."""
    from pyproj import Geod

    xs, ys = pixel_to_map(transform, np.array([col, col + 1, col]), np.array([row, row, row + 1]))
    lon, lat = to_wgs84(crs, xs, ys)
    geod = Geod(ellps="WGS84")
    _, _, along_cols = geod.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, along_rows = geod.inv(lon[0], lat[0], lon[2], lat[2])
    return float(along_cols), float(along_rows)


def gsd_m(transform: Affine, crs: CRS | str | None, centre_px: tuple[float, float] = (0.0, 0.0)) -> float | None:
    """Ground sample distance in metres per pixel, or None without a CRS.

    In a projected CRS with linear units, the grid spacing times the unit (feet count as feet), unless the
    projection's scale differs from the ground by more than 1% at ``centre_px`` (Web Mercator away from the
    equator): then, as in geographic CRSs (degrees), the geodesic size of a pixel there, the mean of its two
    sides.
    """
    if crs is None:
        return None
    crs = CRS.from_user_input(crs)
    ground = float(np.mean(ground_gsd_m(transform, crs, *centre_px)))
    if not crs.is_projected:
        return ground
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    grid = float(np.hypot(transform.a, transform.d)) * unit
    return grid if abs(ground / grid - 1) <= 0.01 else ground


def lonlat_offsets(lon: float, lat: float, east_m: np.ndarray, north_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 positions ``east_m`` and ``north_m`` metres from (lon, lat), along geodesics on the ellipsoid."""
    east_m, north_m = np.asarray(east_m, float), np.asarray(north_m, float)
    azimuth = np.degrees(np.arctan2(east_m, north_m))
    lons, lats, _ = Geod(ellps="WGS84").fwd(
        np.full(east_m.shape, lon), np.full(east_m.shape, lat), azimuth, np.hypot(east_m, north_m)
    )
    return np.asarray(lons, float), np.asarray(lats, float)
