"""The offline review page in a real headless Chromium: no network, keyboard review, export, import back."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyogrio.raw
import pytest
from click.testing import CliRunner
from helpers import gaussian_blobs
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
    assert page_path.exists() and len(list((scored / "review_files").glob("chip_*.png"))) == 4
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
        assert page.locator(".cand img").count() == 2  # only the chips
        browser.close()
