"""The field tablet app in a real headless Chromium: built from the npm packages, served once by a plain static
server, then offline. Its candidates are compared with ``ordnance score`` on the same photos, its ground positions
with the photos' known geometry, and its model outputs with Python ONNX Runtime on the same tiles."""

from __future__ import annotations

import csv
import math

import numpy as np
import pyogrio.raw
import pytest
from click.testing import CliRunner
from helpers import (
    CAMERA_LONLAT,
    CHROMIUM,
    StaticServer,
    chromium,
    dji_xmp,
    drone_photo,
    ground_pixels,
    open_tablet,
    wait_for,
)
from ordnance.inference.cli.main import cli
from ordnance.inference.errors import InputError
from ordnance.inference.tablet import VENDOR, build_tablet, npm_tarball
from ordnance.inference.writers import FIELDS
from PIL.ExifTags import Base
from pyproj import Transformer

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
UTM = Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True)
OFFSETS = [(3.0, 2.0), (-2.5, 2.8), (1.2, -3.4), (-3.5, -1.5)]  # metres east, north of the camera
WIDTH, HEIGHT, GSD, FOCAL_MM, HEIGHT_M = 1200, 900, 0.01, 4.5, 30.0


def _score_in_page(page, photos) -> list[dict]:
    page.set_input_files("#photos", [str(p) for p in photos])
    wait_for(page, f"window.ordnanceTablet.photos.length === {len(photos)} && !window.ordnanceTablet.busy")
    return page.evaluate("window.ordnanceTablet.candidates.map(c => ({...c, box: undefined}))")


@pytest.fixture
def photos(tmp_path):
    """Three drone photos: a DJI photo with everything needed to place candidates on the ground (heading 37.5),
    one without a heading (candidates at the camera, with a radius) and one without any tags (pixels only)."""
    pitch_mm = GSD * FOCAL_MM / HEIGHT_M
    lens = {Base.FocalLength: FOCAL_MM, Base.FocalPlaneXResolution: 1 / pitch_mm, Base.FocalPlaneResolutionUnit: 4}
    folder = tmp_path / "flight"
    folder.mkdir()
    a = drone_photo(folder / "a_dji.jpg", WIDTH, HEIGHT, ground_pixels(OFFSETS, 37.5, GSD, WIDTH, HEIGHT),
                    xmp=dji_xmp(HEIGHT_M, 37.5, -90.0), exif_extra=lens)  # fmt: skip
    b = drone_photo(folder / "b_no_heading.jpg", WIDTH, HEIGHT, [(300, 200), (900, 650)],
                    xmp=dji_xmp(HEIGHT_M, None, -90.0), exif_extra=lens)  # fmt: skip
    c = folder / "c_plain.jpg"
    from helpers import gaussian_blobs
    from PIL import Image

    plain = gaussian_blobs(480, 640, [(100, 100), (500, 300)], sigma=2.0).transpose(1, 2, 0)
    Image.fromarray(plain).save(c, quality=97)
    return [a, b, c]


def test_the_builder_refuses_a_model_without_a_card_and_a_package_that_is_not_the_pinned_one(tmp_path):
    import onnx
    from helpers import blob_model_bytes

    bare = onnx.load_from_string(blob_model_bytes(256))
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    result = CliRunner().invoke(cli, ["tablet", "build", str(tmp_path / "app"), "--model", str(tmp_path / "bare.onnx")])
    assert result.exit_code != 0 and "no ordnance model card" in result.output
    assert not (tmp_path / "app").exists()
    spec = VENDOR["exifr"]
    cache = tmp_path / "npm"
    cache.mkdir()
    tampered = bytearray(npm_tarball("exifr").read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    (cache / f"exifr-{spec['version']}.tgz").write_bytes(bytes(tampered))
    with pytest.raises(InputError, match="is not the pinned"):
        npm_tarball("exifr", cache)


@needs_chromium
def test_the_page_scores_photos_as_ordnance_score_does_and_works_offline(tmp_path, blob_model, photos):
    from playwright.sync_api import sync_playwright

    model = blob_model(256)
    app = tmp_path / "app"
    record = build_tablet(app, model)
    assert record["model"]["sha256"] and set(record["vendor"]) == {"onnxruntime-web", "exifr", "geotiff", "proj4"}
    out = tmp_path / "scored"
    result = CliRunner().invoke(cli, ["score", str(photos[0].parent), "--model", str(model), "-o", str(out),
                                      "--format", "csv", "--no-progress", "--no-review"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(out / "candidates.csv", newline="") as handle:
        expected = list(csv.DictReader(handle))
    requests: list[str] = []
    with StaticServer(app, isolate=True) as server, sync_playwright() as p:
        browser = chromium(p)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        page = open_tablet(context, server.url("index.html"), requests)
        assert page.evaluate("window.ordnanceTablet.errors") == []
        assert "blobnet" in page.inner_text("#card")
        got = _score_in_page(page, photos)

        # the same candidates as `ordnance score`: class, score, box, location and position
        assert len(got) == len(expected) == 4 + 2 + 2
        for mine, theirs in zip(got, expected):
            keys = ("source", "class", "location")
            assert [mine[k] for k in keys] == [theirs[k] for k in keys]
            assert abs(mine["score"] - float(theirs["score"])) <= 1e-3
            box, their_box = (np.array([float(v) for v in r["bbox_px"].split(",")]) for r in (mine, theirs))
            assert np.abs(box - their_box).max() <= 0.5
            if theirs["location"] == "pixel":
                assert math.isnan(mine["lon"]) and theirs["lon"] in ("", "nan")
                continue
            a, b = UTM.transform(mine["lon"], mine["lat"]), UTM.transform(float(theirs["lon"]), float(theirs["lat"]))
            assert math.dist(a, b) < 0.01  # the page's local ellipsoid against pyproj's geodesic: under a centimetre
            assert mine["position_uncertainty_m"] == pytest.approx(float(theirs["position_uncertainty_m"]), rel=1e-6)
        # the DJI photo's items on the ground, within 1 m of where they lie (their pixels come from the geometry)
        camera = UTM.transform(*CAMERA_LONLAT)
        truth = np.array([(camera[0] + e, camera[1] + n) for e, n in OFFSETS])
        placed = np.array([UTM.transform(c["lon"], c["lat"]) for c in got if c["source"] == "a_dji.jpg"])
        errors = np.linalg.norm(truth[:, None] - placed[None], axis=2).min(axis=1)
        assert errors.max() < 1.0 and min(math.hypot(*o) for o in OFFSETS) > 3.5, errors
        assert {c["location"] for c in got if c["source"] == "b_no_heading.jpg"} == {"frame_gps"}

        # review and exports
        page.locator("tr[data-id='1'] button.confirm").click()
        page.locator("tr[data-id='2'] button.reject").click()
        assert page.locator("tr.confirmed").count() == 1 and page.locator("tr.rejected").count() == 1
        page.screenshot(path=str(tmp_path / "tablet.png"), full_page=True)
        files = {}
        for kind in ("csv", "geojson", "kml"):
            with page.expect_download() as info:
                page.click(f"#export-{kind}")
            files[kind] = tmp_path / f"export.{kind}"
            info.value.save_as(files[kind])
        with open(files["csv"], newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == list(FIELDS) and len(rows) == 8
        assert [r["review_status"] for r in rows[:3]] == ["confirmed", "rejected", "unreviewed"]
        for kind in ("geojson", "kml"):  # points with a position only: the plain photo's stay out
            meta, _, geometry, values = pyogrio.raw.read(files[kind])
            assert len(geometry) == 6, kind
            status = values[list(meta["fields"]).index("review_status")]
            assert sorted(status)[:2] == ["confirmed", "rejected"], kind

        # decisions survive the page: opened again and the same photo scored, they are back
        kept = open_tablet(context, server.url("index.html"), requests)
        _score_in_page(kept, photos[:1])
        assert kept.locator("tr.confirmed").count() == 1 and kept.locator("tr.rejected").count() == 1
        kept.close()

        # offline: the service worker holds every file; the page opens and scores with no server at all
        assert page.evaluate("navigator.serviceWorker.ready.then((r) => r.active !== null)")
        asked = len(server.paths)
        server.__exit__()
        context.set_offline(True)
        offline = open_tablet(context, server.url("index.html"), requests)
        assert offline.evaluate("window.ordnanceTablet.errors") == []
        again = _score_in_page(offline, photos[:1])
        assert [c["score"] for c in again] == [c["score"] for c in got if c["source"] == "a_dji.jpg"]
        browser.close()
    assert asked > 0 and all(r.startswith(server.origin) or r.startswith("blob:") for r in requests), requests


def _csv(out):
    with open(out / "candidates.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@needs_chromium
def test_the_page_scores_small_geotiffs_as_ordnance_score_does_and_refuses_what_it_cannot_place(
    tmp_path, blob_model, write_geotiff
):
    """UTM metres (RGBA, with a transparent corner holding a blob) and WGS 84 degrees: the same candidates, map
    coordinates and positions as ``ordnance score``; a CRS the tablet does not know and a rotated grid are refused
    on the page with the reason."""
    import rasterio
    from affine import Affine
    from helpers import gaussian_blobs
    from PIL import Image
    from playwright.sync_api import sync_playwright

    centres = [(60, 60), (200, 120), (330, 260), (520, 400), (90, 430)]
    data = gaussian_blobs(480, 600, centres)
    alpha = np.full((1, 480, 600), 255, np.uint8)
    alpha[:, 300:, 400:] = 0  # no data there: the blob at (520, 400) lies inside it and is not a candidate
    utm = write_geotiff(np.concatenate([data, alpha]), "utm.tif", photometric="RGB", alpha="YES")
    masked = write_geotiff(data, "masked.tif")  # the same corner hidden by GDAL's internal mask instead
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(masked, "r+") as dst:
        dst.write_mask(alpha[0])
    degrees = write_geotiff(gaussian_blobs(480, 600, centres), "degrees.tif", crs="EPSG:4326", gsd_m=1e-7,
                            origin=(33.0, 48.5))  # fmt: skip
    mercator = write_geotiff(data, "mercator.tif", crs="EPSG:3857")
    rotated = write_geotiff(data, "rotated.tif", transform=Affine(0.00866, 0.005, 500000.0, 0.005, -0.00866, 5600000.0))
    model = blob_model(256)
    expected = {}
    for path in (utm, masked, degrees):
        out = tmp_path / f"scored_{path.stem}"
        result = CliRunner().invoke(cli, ["score", str(path), "--model", str(model), "-o", str(out), "--format", "csv",
                                          "--no-progress", "--no-review"])  # fmt: skip
        assert result.exit_code == 0, result.output
        expected[path.name] = _csv(out)
    assert len(expected["utm.tif"]) == len(expected["masked.tif"]) == 4 and len(expected["degrees.tif"]) == 5
    build_tablet(tmp_path / "app", model)
    requests: list[str] = []
    with StaticServer(tmp_path / "app", isolate=True) as server, sync_playwright() as p:
        browser = chromium(p)
        page = open_tablet(browser.new_context(), server.url("index.html"), requests)
        for path in (utm, masked, degrees):
            got = _score_in_page(page, [path])
            assert len(got) == len(expected[path.name]), path.name
            for mine, theirs in zip(got, expected[path.name]):
                same = ("class", "crs", "location")
                assert [mine[k] for k in same] == [theirs[k] for k in same]
                assert mine["epsg"] == int(theirs["epsg"]) and abs(mine["score"] - float(theirs["score"])) <= 1e-3
                assert mine["x"] == pytest.approx(float(theirs["x"]), abs=1e-9 if path is degrees else 1e-6)
                assert mine["y"] == pytest.approx(float(theirs["y"]), abs=1e-9 if path is degrees else 1e-6)
                a = UTM.transform(mine["lon"], mine["lat"])
                b = UTM.transform(float(theirs["lon"]), float(theirs["lat"]))
                assert math.dist(a, b) < 0.01
                assert mine["gsd_m"] == pytest.approx(float(theirs["gsd_m"]), rel=1e-3)
        turned = tmp_path / "turned.jpg"  # EXIF orientation 6: a browser would show it turned by 90 degrees
        exif = Image.Exif()
        exif[Base.Orientation] = 6
        Image.fromarray(data.transpose(1, 2, 0)).save(turned, quality=95, exif=exif)
        refusals = ((mercator, "EPSG:3857 is not a CRS the tablet knows"), (rotated, "rotated"),
                    (turned, "EXIF orientation 6"))  # fmt: skip
        for path, reason in refusals:
            page.set_input_files("#photos", str(path))
            wait_for(page, "!window.ordnanceTablet.busy && window.ordnanceTablet.errors.length > 0")
            assert f"{path.name}: cannot be scored" in page.inner_text("#error") and reason in page.inner_text("#error")
            page.evaluate("window.ordnanceTablet.errors.length = 0")
        browser.close()


@needs_chromium
def test_a_rebuilt_app_replaces_the_installed_one_on_the_next_opens(tmp_path, blob_model):
    """The tablet keeps the app offline; when the team serves a rebuilt app (a new model), the next opens install
    it and drop the old cache whole."""
    from ordnance.inference.card import ModelCard
    from playwright.sync_api import sync_playwright

    first = build_tablet(tmp_path / "app", blob_model(256))
    card = ModelCard(class_names=("ap_mine",), tile_size_px=256, gsd_m=0.01, overlap_px=64, model_name="blobnet-v2")
    requests: list[str] = []
    with StaticServer(tmp_path / "app", isolate=True) as server, sync_playwright() as p:
        browser = chromium(p)
        context = browser.new_context()
        page = open_tablet(context, server.url("index.html"), requests)
        assert page.evaluate("navigator.serviceWorker.ready.then((r) => r.active !== null)")
        assert "blobnet 0" in page.inner_text("#card")
        second = build_tablet(tmp_path / "app", blob_model(256, card=card, name="v2.onnx"))
        assert second["cache"] != first["cache"]
        for _ in range(8):  # the browser finds the new worker on an open; it takes over and serves the new files
            # the browser's own update check on navigation can be throttled: ask for it, as the next open would
            page.evaluate("navigator.serviceWorker.getRegistration().then((r) => r && r.update())")
            page.close()  # the app closed and opened again, as on the tablet: one page (and model) at a time
            page = open_tablet(context, server.url("index.html"), requests)
            if "blobnet-v2" in page.inner_text("#card"):
                break
        assert "blobnet-v2" in page.inner_text("#card")
        assert page.evaluate("caches.keys()") == [second["cache"]]
        browser.close()


@needs_chromium
def test_a_model_opened_on_the_device_is_checked_on_the_page(tmp_path, blob_model):
    """Without a bundled model the page asks for one; a file without a card, or whose graph takes float input
    instead of the contract's uint8 tiles, is refused on the page with the reason, and the page cannot score. A
    good one is kept on the device for the next open, offline too."""
    import onnx
    from onnx import TensorProto
    from playwright.sync_api import sync_playwright

    good = blob_model(256)
    bare = onnx.load(good)
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    floats = onnx.load(good)
    floats.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(floats, tmp_path / "floats.onnx")
    record = build_tablet(tmp_path / "app")
    assert record["model"] is None and "model.onnx" not in record["files"]
    requests: list[str] = []
    with StaticServer(tmp_path / "app", isolate=True) as server, sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_context().new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(server.url("index.html"))
        wait_for(page, "window.ordnanceTablet && window.ordnanceTablet.app !== null")
        assert page.locator("#model-picker").is_visible() and page.locator("#photos").is_disabled()
        for name, reason in (("bare.onnx", "no ordnance model card"), ("floats.onnx", "not the contract's uint8")):
            page.set_input_files("#model-file", str(tmp_path / name))
            wait_for(page, "window.ordnanceTablet.errors.length > 0")
            assert page.inner_text("#error").startswith(f"{name}: ")
            assert reason in page.inner_text("#error") and page.locator("#photos").is_disabled()
            page.evaluate("window.ordnanceTablet.errors.length = 0")
        page.set_input_files("#model-file", str(good))
        wait_for(page, "window.ordnanceTablet.ready")
        assert "blobnet" in page.inner_text("#card") and page.locator("#photos").is_enabled()
        # kept on the device: the next open, with the server gone, scores with it without asking
        assert page.evaluate("navigator.serviceWorker.ready.then((r) => r.active !== null)")
        wait_for(page, "caches.has('ordnance-kept-model')")
        server.__exit__()
        page.context.set_offline(True)
        again = page.context.new_page()
        again.goto(server.url("index.html"))
        wait_for(again, "window.ordnanceTablet && window.ordnanceTablet.ready")
        assert "blob.onnx" in again.inner_text("#card") and "kept on this device" in again.inner_text("#status")
        browser.close()
