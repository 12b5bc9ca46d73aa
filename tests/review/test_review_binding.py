"""Review decisions are bound to their run: another run's decisions, moved coordinates or a file without a run id
are refused; names in the page are escaped."""

from __future__ import annotations

import json
import re

import numpy as np
import pyogrio.raw
import pytest
from click.testing import CliRunner
from helpers import gaussian_blobs, review_page_data
from ordnance.inference.cli.main import cli


def _score(tmp_path, blob_model, write_geotiff, name, centres):
    mosaic = write_geotiff(gaussian_blobs(300, 480, centres), name=f"{name}.tif")
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out),
                                      "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def _page_data(out):
    """The data the review page exports from: its embedded JSON."""
    return review_page_data((out / "review.html").read_text())


def _decisions(out, status="rejected", **change):
    data = _page_data(out)
    features = []
    for c in data["candidates"]:
        props = {k: c[k] for k in ("id", "class", "score", "x", "y")} | {"review_status": status, "run": data["run"]}
        props.update(change)
        features.append({"type": "Feature", "geometry": None, "properties": props})
    path = out.parent / f"{out.name}-decisions.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _statuses(out):
    meta, _, _, fields = pyogrio.raw.read(out / "candidates.gpkg", layer="candidates")
    return list(dict(zip(meta["fields"], fields))["review_status"])


@pytest.fixture
def two_runs(tmp_path, blob_model, write_geotiff):
    a = _score(tmp_path, blob_model, write_geotiff, "a", [(60, 60), (200, 120), (330, 260)])
    b = _score(tmp_path, blob_model, write_geotiff, "b", [(70, 90), (250, 100), (400, 200)])
    return a, b


def test_decisions_of_their_own_run_are_applied(two_runs):
    a, _ = two_runs
    result = CliRunner().invoke(cli, ["review", "import", str(a), str(_decisions(a))])
    assert result.exit_code == 0, result.output
    assert _statuses(a) == ["rejected"] * 3


def test_decisions_of_another_run_are_refused_and_nothing_changes(two_runs):
    a, b = two_runs
    before = (b / "candidates.gpkg").read_bytes()
    result = CliRunner().invoke(cli, ["review", "import", str(b), str(_decisions(a))])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "belong to run" in errors[0] and "a-decisions.geojson" in errors[0]
    assert (b / "candidates.gpkg").read_bytes() == before and _statuses(b) == ["unreviewed"] * 3


@pytest.mark.parametrize("change, words", [({"run": None}, "no run id"), ({"x": 1.0}, "but the candidate is at")])
def test_decisions_without_a_run_or_at_other_coordinates_are_refused(two_runs, change, words):
    a, _ = two_runs
    result = CliRunner().invoke(cli, ["review", "import", str(a), str(_decisions(a, **change))])
    assert result.exit_code != 0 and words in result.output
    assert _statuses(a) == ["unreviewed"] * 3


def test_excel_csv_with_a_byte_order_mark_is_read(two_runs):
    a, _ = two_runs
    data = _page_data(a)
    rows = ["id,x,y,review_status,run"] + [
        f"{c['id']},{c['x']!r},{c['y']!r},confirmed,{data['run']}" for c in data["candidates"]
    ]
    path = a.parent / "decisions.csv"
    path.write_bytes(("\n".join(rows) + "\n").encode("utf-8-sig"))
    result = CliRunner().invoke(cli, ["review", "import", str(a), str(path)])
    assert result.exit_code == 0, result.output
    assert _statuses(a) == ["confirmed"] * 3


def test_names_are_escaped_in_the_page(tmp_path, blob_model, write_geotiff):
    out = _score(tmp_path, blob_model, write_geotiff, "<img src=x onerror=alert(1)>", [(60, 60)])
    html = (out / "review.html").read_text()
    assert "esc(c.source)" in html and "esc(name)" in html and "${c.source}" not in html
    source = _page_data(out)["candidates"][0]["source"]
    assert source.startswith("<img")  # the data keep the name; the page escapes it when it renders
    assert np.isfinite(_page_data(out)["candidates"][0]["score"])


def test_the_page_allows_its_own_script_only(two_runs):
    import base64
    import hashlib

    html = (two_runs[0] / "review.html").read_text()
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', html).group(1)
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    body = html.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    assert directives["script-src"] == f"'sha256-{digest}'"
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'none'"


@pytest.mark.parametrize("damage", ["corrupt", "moved"])
def test_review_build_says_what_is_wrong_in_one_line(two_runs, damage):
    a, _ = two_runs
    if damage == "corrupt":
        (a / "manifest.json").write_text('{"inputs": [')
        words = "not a manifest.json"
    else:  # and the scorer's images gone with it: the page must read the source
        (a.parent / "a.tif").rename(a.parent / "moved.tif")
        (a / "review_preview.npz").unlink()
        words = "is no longer at"
    result = CliRunner().invoke(cli, ["review", "build", str(a)])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and words in errors[0]


def test_the_page_builds_from_the_scorers_images_without_the_source(two_runs):
    """The scorer cut the overview and chips as it read the windows: the page is built again with the mosaic gone,
    its files the same as the page built with it."""
    a, _ = two_runs
    before = {p.name: p.read_bytes() for p in (a / "review_files").iterdir()}
    (a.parent / "a.tif").rename(a.parent / "moved.tif")
    result = CliRunner().invoke(cli, ["review", "build", str(a)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in (a / "review_files").iterdir()} == before
    # a damaged preview file: the page reads everything from the source, here gone, and says so in one line
    (a / "review_preview.npz").write_bytes(b"PK\x03\x04 cut short")
    result = CliRunner().invoke(cli, ["review", "build", str(a)])
    assert result.exit_code != 0 and "is no longer at" in result.output
    (a.parent / "moved.tif").rename(a.parent / "a.tif")
    result = CliRunner().invoke(cli, ["review", "build", str(a)])  # with the source back, from it alone
    assert result.exit_code == 0, result.output
    data = _page_data(a)
    assert data["images"]["chips_cut"] == 0 and data["images"]["chips_read"] == len(data["candidates"]) > 0
    (a.parent / "a.tif").rename(a.parent / "moved.tif")
    # chips of another size must be read from the source, which is gone
    result = CliRunner().invoke(cli, ["review", "build", str(a), "--chip-px", "64"])
    assert result.exit_code != 0 and "is no longer at" in result.output


def test_two_inputs_with_one_file_name_are_refused(tmp_path, blob_model, write_geotiff):
    (tmp_path / "x").mkdir()
    first = write_geotiff(gaussian_blobs(300, 300, [(60, 60)]), name="x/survey.tif")
    second = write_geotiff(gaussian_blobs(300, 300, [(90, 90)]), name="survey.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["score", str(first), str(second), "--model", str(blob_model(256)), "-o", str(out)]
    )
    assert result.exit_code != 0 and "has the same file name as" in result.output
    assert not (out / "candidates.gpkg").exists()


def test_informative_order_puts_scores_nearest_the_operating_threshold_first():
    from ordnance.inference.review import informative_order

    # logit distances to logit(0.3) = -0.847: 0.31 -> 0.047, 0.29 -> 0.048, 0.5 -> 0.847, 0.05 -> 2.097, 0.9 -> 3.044
    assert informative_order(np.array([0.9, 0.31, 0.05, 0.5, 0.29]), 0.3).tolist() == [1, 4, 3, 2, 0]


def test_page_offers_both_orders_and_starts_with_the_chosen_one(tmp_path, blob_model, write_geotiff):
    from ordnance.inference.review import informative_order

    out = _score(tmp_path, blob_model, write_geotiff, "a", [(60, 60), (200, 120), (330, 260)])
    result = CliRunner().invoke(cli, ["review", "build", str(out), "--order", "informative"])
    assert result.exit_code == 0, result.output
    data = _page_data(out)
    assert data["order"] == "informative" and data["operating_threshold"] == pytest.approx(0.3)
    scores = np.array([c["score"] for c in data["candidates"]])
    assert [c["informative"] for c in data["candidates"]] == np.argsort(informative_order(scores, 0.3)).tolist()
    html = (out / "review.html").read_text()
    assert '<option value="informative">' in html and '<option value="score">' in html
    assert CliRunner().invoke(cli, ["review", "build", str(out), "--order", "random"]).exit_code != 0


def test_decisions_in_another_encoding_are_refused_in_one_line(two_runs):
    a, _ = two_runs
    data = _page_data(a)
    rows = ["id,review_status,run,x,y,note"] + [
        f"{c['id']},rejected,{data['run']},{c['x']},{c['y']},feuille morte près du chêne" for c in data["candidates"]
    ]
    path = a.parent / "decisions-latin1.csv"
    path.write_bytes("\n".join(rows).encode("latin-1"))
    result = CliRunner().invoke(cli, ["review", "import", str(a), str(path)])
    assert result.exit_code != 0
    expected = (f"Error: {path}: line 2 is not UTF-8 text; export the decisions from the review page, which writes "
                "UTF-8, or save the file as UTF-8")  # fmt: skip
    assert result.output.strip().splitlines() == [expected]
    assert _statuses(a) == ["unreviewed"] * 3


@pytest.mark.parametrize("chip_px", ["0", "-5", "100000", "abc"])
def test_impossible_chip_sizes_are_refused_before_anything_is_written(two_runs, chip_px):
    a, _ = two_runs
    before = sorted(p.name for p in (a / "review_files").iterdir())
    result = CliRunner().invoke(cli, ["review", "build", str(a), "--chip-px", chip_px])
    assert result.exit_code == 2 and "--chip-px" in result.output
    assert sorted(p.name for p in (a / "review_files").iterdir()) == before


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
@pytest.mark.parametrize("command", ["build", "import"])
def test_a_damaged_candidates_file_is_refused_in_one_line(two_runs, damage, command):
    a, _ = two_runs
    decisions = _decisions(a)
    gpkg = a / "candidates.gpkg"
    if damage == "truncated":
        gpkg.write_bytes(gpkg.read_bytes()[:2000])
    else:  # a GeoPackage of something else under the same name
        import shapely

        pyogrio.raw.write(gpkg, np.array([shapely.to_wkb(shapely.Point(0, 0))], object), field_data=[np.array([1])],
                          fields=["fid_other"], layer="candidates", driver="GPKG", geometry_type="Point",
                          crs="EPSG:32636")  # fmt: skip
    args = ["review", "build", str(a)] if command == "build" else ["review", "import", str(a), str(decisions)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {gpkg}: "), lines
