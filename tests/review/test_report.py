"""The survey report in a real headless Chromium: self-contained (no request leaves the file), the numbers of the
run, the areas and the evaluation, warnings where the reader looks, and a PDF."""

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
CENTRES = [(60, 60), (200, 120), (330, 260), (420, 60)]


@pytest.fixture
def reviewed_run(tmp_path, blob_model, write_geotiff):
    """A scored run with one candidate confirmed and one rejected, areas derived, and an evaluation against a
    truth file holding three of the four blobs."""
    from ordnance.inference.review import run_id

    mosaic = write_geotiff(gaussian_blobs(300, 480, CENTRES), name="survey.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out),
                                      "--no-progress", "--no-review", "--areas"])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    decisions = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": None, "properties": {"id": i, "review_status": s, "run": run_id(manifest)}}
        for i, s in [(1, "confirmed"), (2, "rejected")]]}  # fmt: skip
    (tmp_path / "d.geojson").write_text(json.dumps(decisions))
    assert CliRunner().invoke(cli, ["review", "import", str(out), str(tmp_path / "d.geojson")]).exit_code == 0
    # truth: three of the blob centres (pixel centre + 0.5, 1 cm GSD, origin 500000 / 5600000)
    truth = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32636"}}, "features": [
        {"type": "Feature", "properties": {"class": "ap_mine", "size_m": 0.12},
         "geometry": {"type": "Point", "coordinates": [500000 + (c + 0.5) * 0.01, 5600000 - (r + 0.5) * 0.01]}}
        for c, r in CENTRES[:3]]}  # fmt: skip
    (tmp_path / "truth.geojson").write_text(json.dumps(truth))
    evaluated = CliRunner().invoke(cli, ["evaluate", str(out / "candidates.gpkg"), str(tmp_path / "truth.geojson"),
                                         "-o", str(tmp_path / "eval"), "--floor-m", "0.05"])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    return out, tmp_path / "eval" / "evaluation.json"


def test_report_is_self_contained_and_shows_the_run(reviewed_run, tmp_path):
    from playwright.sync_api import sync_playwright

    out, evaluation = reviewed_run
    result = CliRunner().invoke(cli, ["report", str(out), "--evaluation", str(evaluation)])
    assert result.exit_code == 0, result.output
    report, pdf = out / "report.html", out / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
    meta, _, _, fields = pyogrio.raw.read(out / "candidates.gpkg", layer="candidates")
    table = dict(zip(meta["fields"], fields))
    card = json.loads(json.loads((out / "manifest.json").read_text())["model"]["card"])
    expected_points = int(
        ((table["score"] >= card["score_threshold"]) | (table["review_status"] != "unreviewed")).sum()
    )
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        text = page.inner_text("body")
        circles = page.locator("svg.map circle").count()
        images = page.locator("svg.map image").count()
        area_paths = page.locator("svg.map path[fill-opacity]").count()
        rows = page.locator("table").nth(2).locator("tr").all_inner_texts()  # candidates by class and status
        hectares = page.locator("table").nth(0).locator("tr").nth(1).locator("td").nth(0).inner_text()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert circles == expected_points and images == 1 and area_paths == 1
    by_class = {r.split("\t")[0]: r.split("\t")[1:] for r in rows[1:]}
    statuses = [str(s) for s in table["review_status"]]
    assert by_class["all"] == [str(statuses.count(s)) for s in ("unreviewed", "confirmed", "rejected", "unsure")] + [
        str(len(statuses))
    ]
    assert by_class["all"][1] == "1" and by_class["all"][2] == "1"
    overall = json.loads(evaluation.read_text())["overall"]
    assert f"{overall['recall']:.3f}" in text and "Evaluation against truth" in text
    assert "HA-0001" in text and "CHA" in text
    warned = "never validated" in text
    assert warned == (card.get("operating_point") != "validated")
    manifest = json.loads((out / "manifest.json").read_text())
    assert np.isclose(float(hectares), manifest["area_scanned_ha"], atol=5e-4)


def test_report_without_chromium_for_the_pdf_is_refused_cleanly(reviewed_run, monkeypatch):
    out, _ = reviewed_run
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code != 0 and "Chromium" in result.output
    assert not (out / "report.html").exists() and not (out / "report.pdf").exists()
    assert CliRunner().invoke(cli, ["report", str(out), "--no-pdf"]).exit_code == 0
    assert (out / "report.html").exists() and not (out / "report.pdf").exists()
