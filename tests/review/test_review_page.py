"""The offline review page in a real headless Chromium: no network, keyboard review, export, import back."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyogrio.raw
import pytest
from click.testing import CliRunner
from helpers import blob_model_bytes, gaussian_blobs, review_page_data
from ordnance.inference.cli.main import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture
def scored(tmp_path, blob_model, write_geotiff):
    centres = [(60, 60), (200, 120), (330, 260), (420, 60)]
    mosaic = write_geotiff(gaussian_blobs(300, 480, centres), name="survey.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out),
                                      "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_review_page_offline_keyboard_export_import(scored, tmp_path):
    from playwright.sync_api import sync_playwright

    page_path = scored / "review.html"
    assert page_path.exists()
    assert sorted(p.name for p in (scored / "review_files").iterdir()) == ["chips_0.jpg", "overview_0.jpg"]
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])  # fmt: skip
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        page.wait_for_selector(".cand")
        assert page.locator(".cand").count() == 4
        page.keyboard.press("c")  # confirm #1, moves to #2
        page.keyboard.press("r")  # reject #2
        page.keyboard.press("j")  # skip #3
        page.keyboard.press("u")  # unsure #4
        assert page.locator(".cand.confirmed").count() == 1 and page.locator(".cand.rejected").count() == 1
        page.reload()  # decisions persist in the browser
        page.wait_for_selector(".cand")
        assert page.locator(".cand.unsure").count() == 1
        page.screenshot(path=str(tmp_path / "review.png"))
        with page.expect_download() as info:
            page.click("#export-geojson")
        exported = tmp_path / "decisions.geojson"
        info.value.save_as(exported)
        with page.expect_download() as info:
            page.click("#export-csv")
        info.value.save_as(tmp_path / "decisions.csv")
        browser.close()
    assert all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests
    statuses = [f["properties"]["review_status"] for f in json.loads(exported.read_text())["features"]]
    assert statuses == ["confirmed", "rejected", "unreviewed", "unsure"]
    result = CliRunner().invoke(cli, ["review", "import", str(scored), str(exported)])
    assert result.exit_code == 0, result.output
    meta, _, _, fields = pyogrio.raw.read(scored / "candidates.gpkg", layer="candidates")
    table = dict(zip(meta["fields"], fields))
    order = np.argsort(-table["score"].astype(float), kind="stable")
    assert list(table["review_status"][order]) == statuses
    assert pyogrio.read_info(scored / "candidates.gpkg", layer="coverage")["features"] == 1
    csv_import = CliRunner().invoke(cli, ["review", "import", str(scored), str(tmp_path / "decisions.csv")])
    assert csv_import.exit_code == 0 and "confirmed: 1" in csv_import.output
    assert (tmp_path / "review.png").stat().st_size > 10_000


def test_injected_names_cannot_run_script_in_the_page(tmp_path, blob_model, write_geotiff):
    from playwright.sync_api import sync_playwright

    name = "<img src=x onerror=document.title='pwned'>"
    mosaic = write_geotiff(gaussian_blobs(300, 300, [(60, 60), (200, 120)]), name=f"{name}.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out),
                                      "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto((out / "review.html").as_uri())
        page.wait_for_selector(".cand")
        assert page.locator(".cand").count() == 2  # the page's own script ran
        assert page.title() != "pwned"
        assert f"{name}.tif" in page.locator(".cand").first.inner_text()  # shown as text, not markup
        assert page.locator(".cand .chip").count() == 2 and page.locator("img").count() == 1  # chips and overview
        browser.close()


def test_large_run_chips_in_sheets_and_a_windowed_list(tmp_path, write_geotiff):
    """300 candidates: two JPEG sheets of 16 x 16 chips whose cells show their own candidate, and a page that
    holds a screenful of rows, not 300, while the keyboard walks the whole list."""

    import rasterio
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(5)
    centres = [(40 + 60 * (k % 30), 40 + 60 * (k // 30)) for k in range(300)]
    image = gaussian_blobs(640, 1840, centres, sigma=2.0, peak=120.0)
    image = np.maximum(image, gaussian_blobs(640, 1840, centres[::7], sigma=2.0, peak=250.0))  # a brighter few
    rng_noise = rng.integers(0, 8, image.shape, dtype=np.uint8)
    mosaic = write_geotiff(image + rng_noise, name="big.tif")
    model = tmp_path / "blob400.onnx"
    model.write_bytes(blob_model_bytes(256, k=400))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(model), "-o", str(out),
                                      "--no-progress", "--score-threshold", "0.3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (out / "review_files").iterdir())
    assert files == ["chips_0.jpg", "chips_1.jpg", "overview_0.jpg"]
    with np.load(out / "review_preview.npz") as cut:
        n_cut = len(cut["chip_ids"])
        assert cut["overview_0"].shape == (3, round(640 * 1600 / 1840), 1600)
    html = (out / "review.html").read_text()
    data = review_page_data(html)
    # the scorer cut the overview and most chips; the chips reaching past their 256 px window were read from the
    # mosaic: both kinds are checked against the mosaic below
    assert data["images"] == {"overviews_cut": 1, "overviews_read": 0, "chips_cut": n_cut, "chips_read": 300 - n_cut}
    assert 150 < n_cut < 300
    candidates = data["candidates"]
    assert len(candidates) == 300 and data["chip_grid"] == 16
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    mosaic_band = (image + rng_noise)[0].astype(int)
    sheets = {}
    for k in (0, 1):
        with rasterio.open(out / "review_files" / f"chips_{k}.jpg") as src:
            sheets[k] = src.read(1).astype(int)
    assert sheets[1].shape == (3 * 96, 16 * 96)  # 44 chips: 3 rows
    for c in candidates:
        r, col = divmod(c["cell"], 16)
        cell = sheets[c["sheet"]][r * 96 : (r + 1) * 96, col * 96 : (col + 1) * 96]
        # Each chip is the 96 source px square (2.5 x the 8 px box is less) centred on its box, at 1:1.
        assert np.abs(cell - _square_around(mosaic_band, c["bbox_px"])).mean() < 4, c  # JPEG at quality 90
        assert cell[44:52, 44:52].max() > 100, c
    # The overview (1600 px wide for 1840 px) samples the source at each overview pixel's footprint.
    with rasterio.open(out / "review_files" / "overview_0.jpg") as src:
        overview = src.read(1).astype(int)
    h, w = overview.shape
    assert (h, w) == (round(640 * 1600 / 1840), 1600)
    expected = mosaic_band[(np.arange(h) * 640 // h)[:, None], (np.arange(w) * 1840 // w)[None, :]]
    assert np.abs(overview - expected).mean() < 4  # JPEG at quality 90
    assert np.corrcoef(overview.ravel(), expected.ravel())[0, 1] > 0.95  # the blobs where the source has them
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto((out / "review.html").as_uri())
        page.wait_for_selector(".cand")
        assert page.locator(".cand").count() < 30  # a screenful and a margin
        for _ in range(120):
            page.keyboard.press("j")
        selected = page.locator(".cand.sel")
        assert selected.count() == 1 and selected.get_attribute("data-id") == str(candidates[120]["id"])
        assert "chips_0.jpg" in selected.locator(".chip").get_attribute("style")
        for _ in range(150):
            page.keyboard.press("j")
        assert "chips_1.jpg" in page.locator(".cand.sel .chip").get_attribute("style")
        assert page.locator(".cand").count() < 30
        browser.close()


def test_overview_pixels_average_their_footprint():
    """At a quarter of the size each overview pixel is the mean of its 4 x 4 source pixels, whichever cells the
    raster is read in."""
    from ordnance.inference.preview import Overview

    source = np.random.default_rng(3).integers(0, 256, (3, 96, 160)).astype(np.uint8)
    overview = Overview(160, 96, overview_px=40)
    for top in (0, 48):
        for left in (0, 64, 128):  # cells of 48 x 64 px, the last one cut by the raster's edge
            block = np.zeros((3, 48, 64), np.uint8)
            part = source[:, top : top + 48, left : left + 64]
            block[:, : part.shape[1], : part.shape[2]] = part
            overview.add(block, left, top, (left, top, left + 64, top + 48))
    expected = source.reshape(3, 24, 4, 40, 4).astype(float).mean(axis=(2, 4))
    assert np.abs(overview.image - expected).max() <= 1  # truncated to uint8


def test_candidates_below_the_chip_floor_are_listed_without_a_chip(tmp_path, blob_model, write_geotiff):
    """A run scored low for a recall curve: only candidates at or above the chip floor get chips (by default half
    the card's operating threshold, read from the model file), the others are listed and drawn as "no chip", and
    the header says how many have one."""

    import rasterio
    from ordnance.inference.card import read_card
    from playwright.sync_api import sync_playwright

    peaks = (250, 200, 150, 110, 80, 60, 45, 30)
    image = np.zeros((3, 200, 200 * len(peaks)), np.uint8)
    for k, peak in enumerate(peaks):
        image = np.maximum(image, gaussian_blobs(200, 200 * len(peaks), [(100 + 200 * k, 100)], peak=float(peak)))
    mosaic = write_geotiff(image, name="faint.tif")
    model = blob_model(256)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(model), "-o", str(out), "--no-progress",
                                      "--score-threshold", "0.02"])  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = np.asarray(pyogrio.raw.read_arrow(out / "candidates.gpkg", columns=["score"])[1]["score"], float)
    floor = read_card(model).score_threshold / 2
    assert 0 < (scores >= floor).sum() < len(scores)  # the run has candidates on both sides of the default floor
    html = (out / "review.html").read_text()
    data = review_page_data(html)
    assert data["chip_floor"] == pytest.approx(floor)
    chipped = [c for c in data["candidates"] if c["sheet"] is not None]
    assert data["chipped"] == len(chipped) == (scores >= floor).sum()
    assert min(c["score"] for c in chipped) >= floor > max(c["score"] for c in data["candidates"] if c["sheet"] is None)
    with rasterio.open(out / "review_files" / "chips_0.jpg") as src:
        assert src.width == len(chipped) * 96  # one sheet row, a chip per candidate above the floor
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.goto((out / "review.html").as_uri())
        page.wait_for_selector(".cand")
        assert page.locator(".chip.nochip").count() == len(scores) - len(chipped)
        assert f"chips for {len(chipped)} of {len(scores)} candidates" in page.locator("#meta").inner_text()
        browser.close()
    # --chip-floor 0: every candidate gets its chip again
    result = CliRunner().invoke(cli, ["review", "build", str(out), "--chip-floor", "0"])
    assert result.exit_code == 0, result.output
    data = review_page_data((out / "review.html").read_text())
    assert data["chipped"] == len(scores) and all(c["sheet"] == 0 for c in data["candidates"])
    # the chips below the scorer's floor were read from the mosaic, each by its own window: every chip shows its
    # candidate's 96 px square of the mosaic (1:1, the boxes are smaller than 96 / 2.5 px)
    assert data["images"]["chips_read"] == len(scores) - len(chipped) > 0
    with rasterio.open(out / "review_files" / "chips_0.jpg") as src:
        sheet = src.read(1).astype(int)
    band = image[0].astype(int)
    for c in data["candidates"]:
        r, col = divmod(c["cell"], data["chip_grid"])
        cell = sheet[r * 96 : (r + 1) * 96, col * 96 : (col + 1) * 96]
        assert np.abs(cell - _square_around(band, c["bbox_px"])).mean() < 4, c


def _square_around(band: np.ndarray, bbox_px: str, side: int = 96) -> np.ndarray:
    """The ``side`` px square of ``band`` centred on a candidate's box, zeros beyond the raster."""
    x0, y0, x1, y1 = (float(v) for v in bbox_px.split(","))
    left, top = round((x0 + x1) / 2 - side / 2), round((y0 + y1) / 2 - side / 2)
    square = np.zeros((side, side), int)
    r0, c0 = max(top, 0), max(left, 0)
    patch = band[r0 : top + side, c0 : left + side]
    square[r0 - top : r0 - top + patch.shape[0], c0 - left : c0 - left + patch.shape[1]] = patch
    return square
