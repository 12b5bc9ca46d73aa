"""Candidates in drone photos are placed on the ground from the camera's pose, not at the camera.

The photos are drawn with known geometry: a camera at a known position, height, lens and heading, and items at
known ground offsets east and north of it. Their pixels are worked out here from the definition of heading (the
azimuth the top of the image faces), and the truth is compared in UTM, independently of the geodesic code that
places candidates.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from helpers import CAMERA_LONLAT, dji_xmp, drone_photo, ground_pixels
from ordnance.inference.camera import frame_geometry, read_pose
from ordnance.inference.scoring import ScoringJob, score
from PIL.ExifTags import GPS, Base
from pyproj import Transformer

UTM = Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True)
_pixels, _photo, _dji_xmp = ground_pixels, drone_photo, dji_xmp


def _score(tmp_path, photo, model, **job):
    out = tmp_path / "out"
    score(ScoringJob(inputs=(str(photo),), model=model, out_dir=out, formats=("csv",), progress=False, **job))
    with open(out / "candidates.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if float(r["score"]) > 0.5]
    return rows, json.loads((out / "manifest.json").read_text())


def _errors_m(rows, truth_en) -> np.ndarray:
    """Distance from each true item to the nearest candidate, metres, in UTM."""
    cx, cy = UTM.transform(*CAMERA_LONLAT)
    truth = np.array([(cx + e, cy + n) for e, n in truth_en])
    found = np.array([UTM.transform(float(r["lon"]), float(r["lat"])) for r in rows]).reshape(-1, 2)
    return np.linalg.norm(truth[:, None] - found[None], axis=2).min(axis=1)


OFFSETS = [(3.0, 2.0), (-2.5, 2.8), (1.2, -3.4), (-3.5, -1.5)]  # metres east, north of the camera


@pytest.mark.parametrize("heading", [0.0, 37.5, -120.0])
def test_dji_photo_places_items_on_the_ground(tmp_path, blob_model, heading):
    """RelativeAltitude, FocalLength with the sensor's pixel pitch, gimbal yaw and a nadir gimbal: every item
    within 1 m of its true ground position (here within a few centimetres), not at the camera."""
    width, height, gsd = 1200, 900, 0.01
    focal_mm, height_m = 4.5, 30.0
    pitch_mm = gsd * focal_mm / height_m
    photo = _photo(
        tmp_path / "dji.jpg",
        width,
        height,
        _pixels(OFFSETS, heading, gsd, width, height),
        xmp=_dji_xmp(height_m, heading, -90.0),
        exif_extra={Base.FocalLength: focal_mm, Base.FocalPlaneXResolution: 1 / pitch_mm,
                    Base.FocalPlaneResolutionUnit: 4},
    )  # fmt: skip
    rows, manifest = _score(tmp_path, photo, blob_model(256))
    assert len(rows) == len(OFFSETS)
    assert {r["location"] for r in rows} == {"ground"}
    errors = _errors_m(rows, OFFSETS)
    assert errors.max() < 0.05, errors
    # The camera's position is metres away from every item: the old placement would miss them all.
    assert min(math.hypot(e, n) for e, n in OFFSETS) > 3.5
    radius = np.array([float(r["position_uncertainty_m"]) for r in rows])
    assert np.all((radius >= 5.0) & (radius < 8.0))  # 5 m GNSS default + attitude and height terms
    source = manifest["inputs"][0]
    assert source["positions"].startswith("projected to the ground")
    assert source["gsd_m"] == pytest.approx(gsd, rel=1e-3)


def test_heading_east_puts_the_top_of_the_image_east(tmp_path, blob_model):
    """With the top of the image facing east (heading 90), an item straight above the image centre lies east of
    the camera and one right of it lies south."""
    width, height, gsd = 800, 800, 0.01
    photo = _photo(
        tmp_path / "east.jpg",
        width,
        height,
        [(400, 100), (700, 400)],  # 3 m above the centre, 3 m right of it
        xmp=_dji_xmp(30.0, 90.0, -90.0),
        exif_extra={Base.FocalLength: 4.5, Base.FocalPlaneXResolution: 1 / (gsd * 4.5 / 30.0),
                    Base.FocalPlaneResolutionUnit: 4},
    )  # fmt: skip
    rows, _ = _score(tmp_path, photo, blob_model(256))
    errors = _errors_m(rows, [(3.0, 0.0), (0.0, -3.0)])
    assert errors.max() < 0.05, errors


def test_gps_altitude_and_35mm_focal_resample_and_project(tmp_path, blob_model):
    """Height from GPSAltitude minus the stated ground altitude, the lens from its 35 mm equivalent, heading from
    GPSImgDirection (true north): the photo at 2 cm/px is resampled to the model's 1 cm and still placed."""
    width, height, heading = 1000, 750, 210.0
    f35, ground, agl = 24.0, 212.0, 17.5
    gsd = agl * math.hypot(36, 24) / math.hypot(width, height) / f35
    offsets = [(6.0, 1.0), (-5.0, -4.0), (2.0, 5.5)]
    photo = _photo(
        tmp_path / "gps.jpg",
        width,
        height,
        _pixels(offsets, heading, gsd, width, height),
        exif_extra={Base.FocalLengthIn35mmFilm: int(f35)},
        gps_extra={GPS.GPSAltitude: ground + agl, GPS.GPSAltitudeRef: b"\x00", GPS.GPSImgDirectionRef: "T",
                   GPS.GPSImgDirection: heading},
    )  # fmt: skip
    # Without its pitch the photo does not say it looked straight down: candidates stay at the camera.
    rows, manifest = _score(tmp_path, photo, blob_model(256), ground_altitude_m=ground)
    assert {r["location"] for r in rows} == {"frame_gps"}
    assert "gimbal pitch" in manifest["inputs"][0]["positions"]
    assert manifest["inputs"][0]["gsd_m"] == pytest.approx(gsd, rel=1e-3)
    # Its radius covers the true position: GNSS error plus the distance from the image centre.
    radius = np.array([float(r["position_uncertainty_m"]) for r in rows])
    # (all candidates sit at the camera, so each item's error is its distance from the camera)
    assert np.sort(radius) - np.sort(_errors_m(rows, offsets)) == pytest.approx(np.full(len(offsets), 5.0), abs=0.1)
    for r in rows:
        assert (float(r["lon"]), float(r["lat"])) == pytest.approx(CAMERA_LONLAT, abs=1e-6)

    xmp = _dji_xmp(agl, None, -90.0).replace('drone-dji:RelativeAltitude="+17.50" ', "")
    photo = _photo(
        tmp_path / "gps2.jpg",
        width,
        height,
        _pixels(offsets, heading, gsd, width, height),
        xmp=xmp,
        exif_extra={Base.FocalLengthIn35mmFilm: int(f35)},
        gps_extra={GPS.GPSAltitude: ground + agl, GPS.GPSAltitudeRef: b"\x00", GPS.GPSImgDirectionRef: "T",
                   GPS.GPSImgDirection: heading},
    )  # fmt: skip
    rows, manifest = _score(tmp_path / "b", photo, blob_model(256), ground_altitude_m=ground)
    assert len(rows) == len(offsets)
    assert {r["location"] for r in rows} == {"ground"}
    assert "resampled" in manifest["inputs"][0]["gsd_check"]
    errors = _errors_m(rows, offsets)
    assert errors.max() < 0.1, errors


def test_missing_height_keeps_candidates_at_the_camera_with_unknown_radius(tmp_path, blob_model):
    photo = _photo(tmp_path / "bare.jpg", 600, 400, [(100, 100)], exif_extra={Base.FocalLengthIn35mmFilm: 24})
    rows, manifest = _score(tmp_path, photo, blob_model(256))
    assert [r["location"] for r in rows] == ["frame_gps"]
    assert rows[0]["position_uncertainty_m"] in ("", "nan")
    assert "height above ground" in manifest["inputs"][0]["positions"]


def test_pose_reading_from_tags():
    tags = {
        "EXIF_GPSLatitude": "(48) (30) (0)",
        "EXIF_GPSLatitudeRef": "S",
        "EXIF_GPSLongitude": "(33) (0) (36)",
        "EXIF_GPSLongitudeRef": "W",
        "EXIF_GPSAltitude": "(12.5)",
        "EXIF_GPSAltitudeRef": "0x01",
        "EXIF_GPSHPositioningError": "(0.03)",
        "EXIF_FocalLengthIn35mmFilm": "24",
    }
    xmp = "<rdf:Description><drone-dji:RelativeAltitude>+45.3</drone-dji:RelativeAltitude></rdf:Description>"
    pose = read_pose(tags, xmp)
    assert (pose.lon, pose.lat) == pytest.approx((-33.01, -48.5))
    assert pose.gps_altitude_m == -12.5 and pose.relative_altitude_m == 45.3 and pose.gnss_error_m == 0.03
    geometry = frame_geometry(pose, 4000, 3000, None)
    assert geometry.gsd_m == pytest.approx(45.3 * 43.2666 / 5000 / 24, rel=1e-4)
    assert not geometry.projected and "heading" in geometry.note
    # An oblique gimbal is not projected, whatever else the photo says.
    oblique = read_pose(tags, '<d drone-dji:RelativeAltitude="45.3" drone-dji:GimbalYawDegree="10" '
                        'drone-dji:GimbalPitchDegree="-60"/>')  # fmt: skip
    assert "nadir" in frame_geometry(oblique, 4000, 3000, None).note
    assert read_pose({"EXIF_GPSLatitude": "(95) (0) (0)", "EXIF_GPSLongitude": "(1) (0) (0)"}, None) is None
