"""Proposed hazard areas from a run's candidates: clustering in ground metres, SHA/CHA, rejected candidates,
any CRS, the GeoPackage layer and its exports, and re-derivation on review import."""

from __future__ import annotations

import json
import math

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from click.testing import CliRunner
from ordnance.inference.cli.main import cli
from pyproj import CRS, Geod, Transformer

UTM = "EPSG:32636"
ORIGIN = (500_000.0, 5_600_000.0)  # UTM 36N, on the central meridian
THRESHOLD = 0.4
# Area of a buffered point: shapely's buffer is a 32-gon (quad_segs 8) inscribed in the circle.
POLYGON_SHARE = 32 / (2 * math.pi) * math.sin(2 * math.pi / 32)


def make_run(folder, offsets_m, classes, scores, statuses, crs=UTM, scanned_ha=None):
    """A scoring run's folder, written with the scorer's own writer: candidates at ``offsets_m`` (east, north
    metres from ORIGIN, converted into ``crs``) and a manifest whose model card has operating threshold 0.4."""
    from ordnance.inference.writers import FIELDS, write_gpkg

    folder.mkdir()
    offsets = np.asarray(offsets_m, dtype=np.float64).reshape(-1, 2)
    east, north = ORIGIN[0] + offsets[:, 0], ORIGIN[1] + offsets[:, 1]
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(east, north)
    if crs is None:
        x, y = east - ORIGIN[0], north - ORIGIN[1]
    else:
        x, y = Transformer.from_crs(UTM, crs, always_xy=True).transform(east, north)
    n = len(offsets)
    columns = {
        "id": np.arange(1, n + 1),
        "class": np.array(classes, dtype=object),
        "score": np.array(scores, dtype=np.float64),
        "lon": np.asarray(lon) if crs else np.full(n, np.nan),
        "lat": np.asarray(lat) if crs else np.full(n, np.nan),
        "x": np.asarray(x),
        "y": np.asarray(y),
        "source": np.array(["survey.tif"] * n, dtype=object),
        "bbox_px": np.array(["0,0,1,1"] * n, dtype=object),
        "review_status": np.array(statuses, dtype=object),
    }
    table = {k: columns[k] for k in FIELDS if k in columns}
    coverage = shapely.box(float(np.min(x)) - 1, float(np.min(y)) - 1, float(np.max(x)) + 1, float(np.max(y)) + 1)
    write_gpkg(folder / "candidates.gpkg", table, np.c_[x, y], CRS.from_user_input(crs).to_wkt() if crs else None,
               coverage)  # fmt: skip
    card = {"model_name": "centernet_resnet18", "model_version": "test", "score_threshold": THRESHOLD}
    manifest = {
        "inputs": [{"path": "survey.tif", "sha256": "ab" * 32}],
        "model": {"card": json.dumps(card), "sha256": "cd" * 32, "path": "model.onnx"},
        "started_utc": "2026-11-29T00:00:00Z",
    }
    if scanned_ha is not None:
        manifest["area_scanned_ha"] = scanned_ha
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def areas_cli(folder, *args):
    result = CliRunner().invoke(cli, ["areas", str(folder), *args])
    return result


def read_areas(folder):
    meta, _, geometry, fields = pyogrio.raw.read(folder / "candidates.gpkg", layer="hazard_areas")
    table = dict(zip(meta["fields"], fields))
    return [shapely.from_wkb(g) for g in geometry], table, meta["crs"]


def geodesic_ha(polygon, crs):
    to_wgs = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lonlat = shapely.transform(polygon, lambda c: np.c_[to_wgs.transform(c[:, 0], c[:, 1])])
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(lonlat)[0]) / 10_000


def scene():
    """Two AP clusters 150 m apart (5 and 3 mines, 4 m spacing), one lone UXO 300 m away, one rejected look-alike
    far from all, one rejected look-alike inside the first cluster, one low-scoring candidate far away."""
    first = [(0, 0), (4, 0), (8, 0), (0, 4), (4, 4)]
    second = [(150, 0), (154, 3), (150, 6)]
    offsets = [*first, *second, (0, 300), (-200, -200), (2, 2), (300, 300)]
    classes = ["ap_mine"] * 8 + ["uxo", "ap_mine", "ap_mine", "at_mine"]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.9, 0.45, 0.41, 0.95, 0.99, 0.97, 0.2]
    statuses = ["unreviewed"] * 5 + ["confirmed", "unreviewed", "unsure", "unreviewed", "rejected", "rejected",
                                     "unreviewed"]  # fmt: skip
    return offsets, classes, scores, statuses


def test_clusters_become_one_area_each_with_counts_status_and_true_area(tmp_path):
    run = make_run(tmp_path / "run", *scene())
    result = areas_cli(run)
    assert result.exit_code == 0, result.output
    polygons, table, crs = read_areas(run)
    assert len(polygons) == 3
    by_ids = {ids: k for k, ids in enumerate(table["candidate_ids"])}
    # the confirmed cluster is a CHA and comes first; the others are SHA
    assert list(table["status"]) == ["CHA", "SHA", "SHA"]
    assert set(by_ids) == {"6,7,8", "9", "1,2,3,4,5"}
    first = by_ids["1,2,3,4,5"]
    assert table["n_ap_mine"][first] == 5 and table["n_uxo"][first] == 0 and table["n_confirmed"][first] == 0
    assert table["n_rejected"][first] == 1  # the look-alike at (2, 2) lies inside and is counted
    assert table["n_unreviewed"][first] == 5 and table["max_score"][first] == pytest.approx(0.9)
    second = by_ids["6,7,8"]
    assert table["n_confirmed"][second] == 1 and table["n_unreviewed"][second] == 2
    # the lone UXO: a disc of the UXO buffer (15 m), as a 32-gon
    lone = by_ids["9"]
    assert table["area_ha"][lone] == pytest.approx(math.pi * 15**2 * POLYGON_SHARE / 10_000, rel=2e-3)
    # the first cluster: its convex hull (8 x 4 m box minus a corner triangle) grown by 10 m
    hull = shapely.Polygon([(0, 0), (8, 0), (4, 4), (0, 4)])
    expected = hull.area + hull.length * 10 + math.pi * 10**2 * POLYGON_SHARE
    assert table["area_ha"][first] == pytest.approx(expected / 10_000, rel=5e-3)
    assert all(table["area_ha"][k] == pytest.approx(geodesic_ha(p, crs), rel=1e-6) for k, p in enumerate(polygons))
    assert set(table["model_sha256"]) == {"cd" * 32} and set(table["sources"]) == {"survey.tif"}
    assert list(table["id"]) == ["HA-0001", "HA-0002", "HA-0003"]
    # other layers untouched
    assert pyogrio.read_info(run / "candidates.gpkg", layer="candidates")["features"] == 12
    assert pyogrio.read_info(run / "candidates.gpkg", layer="coverage")["features"] == 1


def test_rejected_and_weak_candidates_never_make_or_grow_an_area(tmp_path):
    offsets, classes, scores, statuses = scene()
    run = make_run(tmp_path / "run", offsets, classes, scores, statuses)
    assert areas_cli(run).exit_code == 0
    polygons, table, _ = read_areas(run)
    rejected_far = shapely.Point(ORIGIN[0] - 200, ORIGIN[1] - 200)
    weak_far = shapely.Point(ORIGIN[0] + 300, ORIGIN[1] + 300)
    assert not any(p.intersects(rejected_far.buffer(30)) or p.intersects(weak_far.buffer(30)) for p in polygons)
    # dropping the rejected look-alike inside the first cluster changes nothing but its count
    keep = [k for k in range(len(offsets)) if k != 10]
    other = make_run(tmp_path / "other", *([v[k] for k in keep] for v in (offsets, classes, scores, statuses)))
    assert areas_cli(other).exit_code == 0
    _, table2, _ = read_areas(other)
    assert np.allclose(np.sort(table["area_ha"]), np.sort(table2["area_ha"]))
    # a higher --min-score drops the cluster whose evidence is all below it, but never a confirmed one
    assert areas_cli(run, "--min-score", "0.92").exit_code == 0
    _, table3, _ = read_areas(run)
    assert sorted(table3["candidate_ids"]) == ["6", "9"]  # the confirmed mine and the 0.95 UXO
    assert json.loads((run / "hazard_areas.json").read_text())["rules"]["min_score"] == 0.92


def test_linking_distance_and_min_count(tmp_path):
    """Two AT mines 24 m apart link (AT 25 m); 26 m apart they are two areas (buffers of 10 m do not touch);
    --min-count 2 drops lone unconfirmed candidates."""
    near = make_run(tmp_path / "near", [(0, 0), (24, 0)], ["at_mine"] * 2, [0.9, 0.9], ["unreviewed"] * 2)
    far = make_run(tmp_path / "far", [(0, 0), (26, 0)], ["at_mine"] * 2, [0.9, 0.9], ["unreviewed"] * 2)
    assert areas_cli(near).exit_code == 0 and areas_cli(far).exit_code == 0
    assert len(read_areas(near)[0]) == 1 and len(read_areas(far)[0]) == 2
    assert areas_cli(far, "--link-m", "at_mine=30").exit_code == 0
    assert len(read_areas(far)[0]) == 1
    assert areas_cli(far, "--min-count", "2").exit_code == 0
    assert len(read_areas(far)[0]) == 0
    bad = areas_cli(far, "--link-m", "at_mine=-3")
    assert bad.exit_code != 0 and "--link-m" in bad.output and "metres >= 0" in bad.output


def test_uxo_link_keeps_a_submunition_footprint_with_thin_edges_in_one_area(tmp_path):
    """The UXO default (45 m, README): a footprint whose edge items lie 40 m from the rest stays one area, two UXO
    46 m apart (beyond the link and twice the 15 m buffer) are two."""
    footprint = [(0, 0), (8, 3), (15, -4), (22, 2), (62, 0), (-40, 5)]  # core items, two edge items 40 m out
    one = make_run(tmp_path / "one", footprint, ["uxo"] * 6, [0.9] * 6, ["confirmed"] * 6)
    two = make_run(tmp_path / "two", [(0, 0), (46, 0)], ["uxo"] * 2, [0.9] * 2, ["confirmed"] * 2)
    assert areas_cli(one).exit_code == 0 and areas_cli(two).exit_code == 0
    assert len(read_areas(one)[0]) == 1 and len(read_areas(two)[0]) == 2


def test_a_cluster_within_linking_distance_of_another_clusters_hull_joins_it(tmp_path):
    """Two UXO 40 m apart (linked) and a third 48 m from both but 44 m from the ground between them: the gap an
    unfound item leaves. Within the 45 m link of the hull it joins (one area); 47 m from the hull it does not."""
    near = make_run(tmp_path / "near", [(0, 0), (40, 0), (20, 44)], ["uxo"] * 3, [0.9] * 3, ["confirmed"] * 3)
    far = make_run(tmp_path / "far", [(0, 0), (40, 0), (20, 47)], ["uxo"] * 3, [0.9] * 3, ["confirmed"] * 3)
    assert areas_cli(near).exit_code == 0 and areas_cli(far).exit_code == 0
    assert len(read_areas(near)[0]) == 1 and len(read_areas(far)[0]) == 2


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:2263", "EPSG:3857"])  # degrees, US survey feet, Web Mercator
def test_areas_are_in_ground_metres_whatever_the_crs(tmp_path, crs):
    """The same scene in degrees, feet or Web Mercator (whose metres are stretched by 1/cos(lat), 1.8x here) gives
    the same areas as in UTM, written in the candidates' own CRS."""
    offsets, classes, scores, statuses = scene()
    utm = make_run(tmp_path / "utm", offsets, classes, scores, statuses)
    other = make_run(tmp_path / "other", offsets, classes, scores, statuses, crs=crs)
    assert areas_cli(utm).exit_code == 0 and areas_cli(other).exit_code == 0
    p_utm, t_utm, _ = read_areas(utm)
    p_other, t_other, crs_other = read_areas(other)
    assert CRS.from_user_input(crs_other) == CRS.from_user_input(crs)
    assert list(t_other["candidate_ids"]) == list(t_utm["candidate_ids"])
    assert np.allclose(t_other["area_ha"], t_utm["area_ha"], rtol=1e-3)
    to_utm = Transformer.from_crs(crs, UTM, always_xy=True)
    for a, b in zip(p_utm, p_other):
        back = shapely.transform(b, lambda c: np.c_[to_utm.transform(c[:, 0], c[:, 1])])
        assert back.symmetric_difference(a).area / a.area < 0.01


def test_not_georeferenced_candidates_are_refused(tmp_path):
    run = make_run(tmp_path / "run", [(0, 0)], ["ap_mine"], [0.9], ["unreviewed"], crs=None)
    before = (run / "candidates.gpkg").read_bytes()
    result = areas_cli(run)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "candidates.gpkg" in lines[0] and "not georeferenced" in lines[0]
    assert (run / "candidates.gpkg").read_bytes() == before and not (run / "hazard_areas.json").exists()


def test_exports_round_trip_in_wgs84(tmp_path):
    run = make_run(tmp_path / "run", *scene())
    assert areas_cli(run).exit_code == 0
    polygons, table, crs = read_areas(run)
    to_wgs = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for suffix in ("geojson", "kml"):
        meta, _, geometry, fields = pyogrio.raw.read(run / f"hazard_areas.{suffix}")
        exported = dict(zip(meta["fields"], fields))
        assert CRS.from_user_input(meta["crs"]).to_epsg() == 4326
        key = "Name" if suffix == "kml" else "id"  # KML carries the area id as each placemark's name
        assert list(exported[key]) == list(table["id"])
        for wkb, polygon in zip(geometry, polygons):
            expected = shapely.transform(polygon, lambda c: np.c_[to_wgs.transform(c[:, 0], c[:, 1])])
            got = shapely.from_wkb(wkb)
            if got.has_z:
                got = shapely.force_2d(got)
            assert got.symmetric_difference(expected).area / expected.area < 1e-6


def test_review_import_derives_the_areas_again(tmp_path):
    """A confirmed decision on the lone UXO turns its SHA into a CHA; rejecting the whole first cluster removes it."""
    from ordnance.inference.review import run_id

    run = make_run(tmp_path / "run", *scene())
    assert areas_cli(run, "--min-count", "1").exit_code == 0
    _, before, _ = read_areas(run)
    assert len(before["id"]) == 3
    manifest = json.loads((run / "manifest.json").read_text())
    decisions = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": None, "properties": {"id": i, "review_status": s, "run": run_id(manifest)}}
        for i, s in [(9, "confirmed"), (1, "rejected"), (2, "rejected"), (3, "rejected"), (4, "rejected"),
                     (5, "rejected")]]}  # fmt: skip
    (tmp_path / "decisions.geojson").write_text(json.dumps(decisions))
    result = CliRunner().invoke(cli, ["review", "import", str(run), str(tmp_path / "decisions.geojson")])
    assert result.exit_code == 0, result.output
    _, after, _ = read_areas(run)
    assert sorted(zip(after["candidate_ids"], after["status"])) == [("6,7,8", "CHA"), ("9", "CHA")]
    exported = pyogrio.raw.read(run / "hazard_areas.geojson")[3]
    assert len(exported[0]) == 2


def test_score_with_areas_proposes_them_from_a_real_run(tmp_path, blob_model, write_geotiff):
    """`ordnance score --areas` on a 3 x 4.8 m mosaic with four blobs: one area (the blobs lie within metres of
    each other) holding every candidate at or above the card's threshold, and no more."""
    from helpers import gaussian_blobs

    mosaic = write_geotiff(gaussian_blobs(300, 480, [(60, 60), (200, 120), (330, 260), (420, 60)]), name="s.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out),
                                      "--no-progress", "--no-review", "--areas"])  # fmt: skip
    assert result.exit_code == 0, result.output
    meta, _, geometry, fields = pyogrio.raw.read(out / "candidates.gpkg", layer="candidates")
    candidates = dict(zip(meta["fields"], fields))
    threshold = json.loads((out / "hazard_areas.json").read_text())["rules"]["min_score"]
    evidence = sorted(int(i) for i, s in zip(candidates["id"], candidates["score"]) if s >= threshold)
    assert len(evidence) == 4
    polygons, table, _ = read_areas(out)
    assert len(polygons) == 1 and table["candidate_ids"][0] == ",".join(map(str, evidence))
    assert all(polygons[0].contains(shapely.from_wkb(g)) for g in geometry)


def test_mine_action_export_rows_coordinates_and_mgrs(tmp_path):
    """One row per candidate, then per area; lat/lon and MGRS agree with an independent UTM projection (the MGRS
    digits are the UTM easting and northing within their 100 km square); the area's WKT is its polygon."""
    import csv

    offsets, classes, scores, statuses = scene()
    run = make_run(tmp_path / "run", offsets, classes, scores, statuses)
    result = areas_cli(run, "--survey-date", "2026-11-20")
    assert result.exit_code == 0, result.output
    with open(run / "mine_action.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    candidates = [r for r in rows if r["record_type"] == "candidate"]
    areas = [r for r in rows if r["record_type"] == "area"]
    assert len(candidates) == 12 and [r["record_id"] for r in areas] == ["HA-0001", "HA-0002", "HA-0003"]
    assert {r["survey_date"] for r in rows} == {"2026-11-20"}
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    for row, (east, north) in zip(candidates, offsets):
        e, n = to_utm.transform(float(row["lon"]), float(row["lat"]))
        assert abs(e - (ORIGIN[0] + east)) < 0.02 and abs(n - (ORIGIN[1] + north)) < 0.02  # 7 decimals: ~1 cm
        code = row["mgrs"]
        assert code[:2] == "36" and len(code) == 15  # zone 36, band, square, 5 + 5 digits (1 m)
        assert int(code[5:10]) == int((ORIGIN[0] + east) % 100_000) and int(code[10:]) == int(
            (ORIGIN[1] + north) % 100_000
        )
    # candidates name their area; rejected and weak ones belong to none
    by_id = {r["record_id"]: r for r in candidates}
    assert by_id["1"]["area_id"] and by_id["1"]["area_id"] == by_id["5"]["area_id"]
    assert by_id["10"]["area_id"] == "" and by_id["12"]["area_id"] == ""
    assert by_id["6"]["status"] == "confirmed" and by_id["6"]["class"] == "ap_mine"
    polygons, table, crs = read_areas(run)
    to_wgs = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for row, polygon, area_ha in zip(areas, polygons, table["area_ha"]):
        expected = shapely.transform(polygon, lambda c: np.c_[to_wgs.transform(c[:, 0], c[:, 1])])
        got = shapely.from_wkt(row["wkt"])
        assert got.symmetric_difference(expected).area / expected.area < 2e-3  # WKT at 7 decimals: about 1 cm
        assert got.contains(shapely.Point(float(row["lon"]), float(row["lat"])))
        assert float(row["area_ha"]) == pytest.approx(area_ha, abs=1e-4)
    assert areas[0]["status"] == "CHA" and areas[0]["class"] == "ap_mine" and areas[0]["n_items"] == "3"


def test_poisson_tail_equals_its_closed_forms():
    from ordnance.inference.areas import poisson_tail

    mu = np.array([0.3, 2.0, 18.8, 150.0])
    assert np.allclose(poisson_tail(np.zeros(4, int), mu), 1.0)
    assert np.allclose(poisson_tail(np.ones(4, int), mu), 1 - np.exp(-mu), rtol=1e-9)
    assert np.allclose(poisson_tail(np.full(4, 2), mu), 1 - np.exp(-mu) * (1 + mu), rtol=1e-9)
    far = poisson_tail(np.array([60]), np.array([18.8]))[0]  # a term ratio bound: the first term times 1/(1-q)
    first = math.exp(-18.8 + 60 * math.log(18.8) - math.lgamma(61))
    assert first <= far <= first / (1 - 18.8 / 61)


def _scatter_scene(seed, cluster):
    """A 200 x 200 m survey (4 ha) with 600 unreviewed false alarms scattered uniformly (150 per ha: closer than
    the 20 m linking distance, so they chain), optionally 40 unreviewed AP mines within 8 m of (50, 50), and one
    confirmed UXO at (150, 150)."""
    rng = np.random.default_rng(seed)
    offsets = list(rng.uniform(0, 200, (600, 2)))
    if cluster:
        angle, radius = rng.uniform(0, 2 * np.pi, 40), 8 * np.sqrt(rng.uniform(0, 1, 40))
        offsets += list(np.c_[50 + radius * np.cos(angle), 50 + radius * np.sin(angle)])
    offsets.append((150.0, 150.0))
    n = len(offsets)
    return offsets, ["ap_mine"] * (n - 1) + ["uxo"], [0.8] * n, ["unreviewed"] * (n - 1) + ["confirmed"]


def test_density_rule_keeps_the_dense_cluster_and_the_confirmed_item_out_of_a_chained_scatter(tmp_path):
    run = make_run(tmp_path / "run", *_scatter_scene(0, cluster=True), scanned_ha=4.0)
    assert areas_cli(run).exit_code == 0
    chained, fields, _ = read_areas(run)
    assert len(chained) <= 2 and float(np.sum(fields["area_ha"])) > 3.0  # the scatter chains over most of 4 ha
    result = areas_cli(run, "--density-alpha", "0.01")
    assert result.exit_code == 0, result.output
    assert "cluster beyond chance" in result.output
    polygons, fields, crs = read_areas(run)
    assert sorted(fields["status"]) == ["CHA", "SHA"]
    to_crs = Transformer.from_crs(UTM, crs, always_xy=True)
    centre = shapely.Point(to_crs.transform(ORIGIN[0] + 50, ORIGIN[1] + 50))
    uxo = shapely.Point(to_crs.transform(ORIGIN[0] + 150, ORIGIN[1] + 150))
    sha = polygons[list(fields["status"]).index("SHA")]
    cha = polygons[list(fields["status"]).index("CHA")]
    assert sha.contains(centre) and not sha.contains(uxo) and cha.contains(uxo)
    # cluster (8 m) + its edge (within 20 m of a dense candidate) + 10 m buffer: well under a disc of 40 m
    assert fields["area_ha"][list(fields["status"]).index("SHA")] < math.pi * 40**2 / 10_000
    assert fields["n_ap_mine"][list(fields["status"]).index("SHA")] >= 40
    saved = json.loads((run / "hazard_areas.json").read_text())["rules"]
    assert saved["density_alpha"] == 0.01 and saved["density"]["dense"] >= 20


@pytest.mark.parametrize("seed", range(4))
def test_density_rule_draws_no_area_from_a_uniform_scatter(tmp_path, seed):
    offsets, classes, scores, statuses = _scatter_scene(seed, cluster=False)
    run = make_run(tmp_path / "run", offsets[:-1], classes[:-1], scores[:-1], statuses[:-1], scanned_ha=4.0)
    assert areas_cli(run, "--density-alpha", "0.01").exit_code == 0
    assert len(read_areas(run)[0]) == 0


def test_density_rule_needs_the_scanned_area(tmp_path):
    run = make_run(tmp_path / "run", *_scatter_scene(0, cluster=True))
    result = areas_cli(run, "--density-alpha", "0.01")
    assert result.exit_code != 0 and "scanned area" in result.output
