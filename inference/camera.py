"""Ground positions of candidates in drone photos from the camera's pose (EXIF and DJI XMP), for frames without a
map grid.

A nadir photo taken at height H above ground with a lens whose focal length is f (and a sensor whose pixel
pitch is p) covers ``H * p / f`` metres per pixel. With the camera's heading (the azimuth the top of the image
faces), a pixel's offset from the image centre becomes an offset on the ground east and north of the camera's
GNSS position. Candidates are placed there (``location = ground``) with an uncertainty radius. Where the photo
lacks what this needs (height above ground, focal length and sensor, heading, or a nadir gimbal), candidates
stay at the camera's position (``location = frame_gps``) and the radius covers where they can be: the GNSS
error plus the candidate's distance from the image centre when the GSD is known, unknown (NaN) otherwise.

Tags read (GDAL exposes EXIF as ``EXIF_*`` and XMP in the ``xml:XMP`` domain):

- position: EXIF GPSLatitude/GPSLongitude; GNSS error: EXIF GPSHPositioningError, else ``DEFAULT_GNSS_ERROR_M``.
- height above ground: DJI XMP ``RelativeAltitude`` (above the take-off point), else EXIF GPSAltitude minus a
  ground altitude the user gives (``--ground-altitude-m``); GPSAltitude alone is above sea level, not ground.
- camera: EXIF FocalLength with FocalPlaneXResolution (the sensor's pixel pitch), else FocalLengthIn35mmFilm
  (the 35 mm equivalent, through the 43.27 mm diagonal of a 36 x 24 mm frame).
- heading: DJI XMP ``GimbalYawDegree``, else EXIF GPSImgDirection referenced to true north.
- nadir: DJI XMP ``GimbalPitchDegree`` within ``NADIR_TOLERANCE_DEG`` of -90. A photo that does not say how its
  camera pointed is not projected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from ordnance.inference.georef import lonlat_offsets

DEFAULT_GNSS_ERROR_M = 5.0  # horizontal error of a drone's GNSS fix without RTK, when the photo does not say
NADIR_TOLERANCE_DEG = 5.0  # gimbal pitch within this of straight down counts as nadir
ATTITUDE_ERROR_DEG = 2.0  # gimbal pitch/roll and heading error assumed in the uncertainty radius
HEIGHT_ERROR = 0.05  # relative error of the height above ground (barometer drift, uneven ground)
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # EXIF resolution units: inch, cm, mm, micrometre


@dataclass(frozen=True)
class CameraPose:
    """What a photo's tags say about where and how it was taken (None: not in the tags).

    Attributes:
        lon, lat: GNSS position of the camera, WGS 84 degrees.
        gnss_error_m: Horizontal GNSS error, metres.
        relative_altitude_m: Height above the take-off point (DJI XMP RelativeAltitude).
        gps_altitude_m: GNSS altitude above sea level (EXIF GPSAltitude).
        focal_mm: Focal length (EXIF FocalLength).
        pixel_pitch_mm: Sensor pixel pitch from FocalPlaneXResolution.
        focal_35mm: 35 mm equivalent focal length (EXIF FocalLengthIn35mmFilm).
        heading_deg: Azimuth the top of the image faces, degrees clockwise from true north.
        pitch_deg: Gimbal pitch, degrees (-90 is straight down).
    """

    lon: float
    lat: float
    gnss_error_m: float = DEFAULT_GNSS_ERROR_M
    relative_altitude_m: float | None = None
    gps_altitude_m: float | None = None
    focal_mm: float | None = None
    pixel_pitch_mm: float | None = None
    focal_35mm: float | None = None
    heading_deg: float | None = None
    pitch_deg: float | None = None


def _number(text: str | None) -> float | None:
    """An EXIF value as GDAL writes it ('4.5', '(312.5)', '24') as a float; None when absent or not a number."""
    if text is None:
        return None
    match = re.search(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", str(text))
    value = float(match.group()) if match else None
    return value if value is not None and math.isfinite(value) else None


def _dms(text: str) -> float:
    parts = [float(p) for p in re.findall(r"-?\d+(?:\.\d+)?", text)]
    return parts[0] + parts[1] / 60 + parts[2] / 3600


def _xmp_value(xmp: str, name: str) -> float | None:
    """A DJI XMP property, as an attribute (drone-dji:Name="+30.2") or an element (<drone-dji:Name>30.2<...)."""
    match = re.search(rf'drone-dji:{name}\s*=\s*"([^"]*)"', xmp) or re.search(rf"<drone-dji:{name}>([^<]*)<", xmp)
    return _number(match.group(1)) if match else None


def read_pose(tags: dict[str, str], xmp: str | None) -> CameraPose | None:
    """The pose in a photo's EXIF tags and XMP packet; None without a GNSS position."""
    try:
        lat = _dms(tags["EXIF_GPSLatitude"]) * (-1 if tags.get("EXIF_GPSLatitudeRef", "N").strip() == "S" else 1)
        lon = _dms(tags["EXIF_GPSLongitude"]) * (-1 if tags.get("EXIF_GPSLongitudeRef", "E").strip() == "W" else 1)
    except (KeyError, ValueError, IndexError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    xmp = xmp or ""
    gps_alt = _number(tags.get("EXIF_GPSAltitude"))
    if gps_alt is not None and tags.get("EXIF_GPSAltitudeRef", "").strip() in {"1", "0x01"}:
        gps_alt = -gps_alt  # below sea level
    pitch_mm = None
    resolution = _number(tags.get("EXIF_FocalPlaneXResolution"))
    unit = _UNIT_MM.get(int(_number(tags.get("EXIF_FocalPlaneResolutionUnit")) or 2))  # EXIF's default: inch
    if resolution and resolution > 0 and unit:
        pitch_mm = unit / resolution
    heading = _xmp_value(xmp, "GimbalYawDegree")
    if heading is None and tags.get("EXIF_GPSImgDirectionRef", "").strip() == "T":
        heading = _number(tags.get("EXIF_GPSImgDirection"))
    error = _number(tags.get("EXIF_GPSHPositioningError"))
    return CameraPose(
        lon=lon,
        lat=lat,
        gnss_error_m=error if error and error > 0 else DEFAULT_GNSS_ERROR_M,
        relative_altitude_m=_xmp_value(xmp, "RelativeAltitude"),
        gps_altitude_m=gps_alt,
        focal_mm=_number(tags.get("EXIF_FocalLength")),
        pixel_pitch_mm=pitch_mm,
        focal_35mm=_number(tags.get("EXIF_FocalLengthIn35mmFilm")),
        heading_deg=heading,
        pitch_deg=_xmp_value(xmp, "GimbalPitchDegree"),
    )


@dataclass(frozen=True)
class FrameGeometry:
    """How a photo's pixels reach the ground: GSD and heading where known, and why not where not.

    Attributes:
        gsd_m: Metres per pixel at the image centre (None: unknown).
        projected: Pixel offsets can be placed on the ground (GSD, heading and a nadir camera known).
        height_m: Height above ground used.
        note: What was used or what is missing, for the manifest.
    """

    gsd_m: float | None
    projected: bool
    height_m: float | None
    note: str


def frame_geometry(pose: CameraPose, width: int, height: int, ground_altitude_m: float | None) -> FrameGeometry:
    """The GSD and whether pixels can be placed on the ground, from the pose of a ``width`` x ``height`` photo."""
    missing = []
    if pose.relative_altitude_m is not None:
        h, h_note = pose.relative_altitude_m, "height from XMP RelativeAltitude (above the take-off point)"
    elif pose.gps_altitude_m is not None and ground_altitude_m is not None:
        h = pose.gps_altitude_m - ground_altitude_m
        h_note = f"height from GPSAltitude minus ground altitude {ground_altitude_m:g} m"
    else:
        h, h_note = None, ""
        missing.append("height above ground (XMP RelativeAltitude, or GPSAltitude with --ground-altitude-m)")
    if h is not None and not h > 0:
        missing.append(f"a positive height above ground (got {h:.1f} m)")
        h = None
    pitch = None
    if pose.focal_mm and pose.pixel_pitch_mm:
        pitch = pose.pixel_pitch_mm / pose.focal_mm
        c_note = f"focal {pose.focal_mm:g} mm, pixel pitch {pose.pixel_pitch_mm * 1000:.2f} um"
    elif pose.focal_35mm:
        pitch = FULL_FRAME_DIAGONAL_MM / math.hypot(width, height) / pose.focal_35mm
        c_note = f"35 mm equivalent focal {pose.focal_35mm:g} mm"
    else:
        missing.append("focal length and sensor (FocalLength with FocalPlaneXResolution, or FocalLengthIn35mmFilm)")
    gsd = h * pitch if h is not None and pitch is not None else None
    if pose.heading_deg is None:
        missing.append("heading (XMP GimbalYawDegree, or GPSImgDirection to true north)")
    if pose.pitch_deg is None:
        missing.append("gimbal pitch (XMP GimbalPitchDegree)")
    elif abs(pose.pitch_deg + 90) > NADIR_TOLERANCE_DEG:
        missing.append(f"a nadir camera (gimbal pitch {pose.pitch_deg:g} deg, not -90 +- {NADIR_TOLERANCE_DEG:g})")
    if missing:
        note = "at the camera's GNSS position; missing: " + "; ".join(missing)
        if gsd is not None:
            note += f"; GSD {gsd * 100:.2f} cm/px ({h_note}, {c_note})"
        return FrameGeometry(gsd, False, h, note)
    note = f"projected to the ground: GSD {gsd * 100:.2f} cm/px ({h_note}, {c_note}), heading {pose.heading_deg:g} deg"
    return FrameGeometry(gsd, True, h, note)


def place(
    pose: CameraPose, geometry: FrameGeometry, cols: np.ndarray, rows: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """Candidates at pixel centres (cols, rows) on the ground: (lon, lat, location, uncertainty radius in m)."""
    cols, rows = np.asarray(cols, float), np.asarray(rows, float)
    dx, dy = cols - width / 2, rows - height / 2
    lon0, lat0 = np.full(len(cols), pose.lon), np.full(len(cols), pose.lat)
    if geometry.gsd_m is None:
        return lon0, lat0, "frame_gps", np.full(len(cols), np.nan)
    distance = np.hypot(dx, dy) * geometry.gsd_m
    if not geometry.projected:
        return lon0, lat0, "frame_gps", pose.gnss_error_m + distance
    yaw = math.radians(pose.heading_deg)
    # The top of the image faces `yaw`; image right faces yaw + 90 deg. Pixel rows grow downwards.
    east = geometry.gsd_m * (dx * math.cos(yaw) - dy * math.sin(yaw))
    north = geometry.gsd_m * (-dx * math.sin(yaw) - dy * math.cos(yaw))
    lon, lat = lonlat_offsets(pose.lon, pose.lat, east, north)
    attitude = math.radians(ATTITUDE_ERROR_DEG)
    radius = pose.gnss_error_m + geometry.height_m * math.tan(attitude) + distance * (attitude + HEIGHT_ERROR)
    return lon, lat, "ground", radius
