"""Proposed hazard areas: candidates clustered into polygons an information-management system can take.

Mine action records suspected and confirmed hazardous areas (SHA and CHA, IMAS 08.10 and 08.20), not points.
``derive_areas`` links the evidence of a scoring run (candidates that a reviewer confirmed, and those still
unreviewed or unsure that score at or above a threshold) into clusters, and draws one polygon around each: the
convex hull of its candidates grown by a buffer. Polygons that touch are merged, so areas never overlap. An area
holding a confirmed item is a CHA proposal, any other an SHA proposal. Rejected candidates never create or grow an
area; those inside one are counted.

Distances are ground metres whatever the candidates' CRS: the evidence is projected from its WGS84 lon/lat into
the local UTM zone, and areas are measured on the WGS84 ellipsoid. Polygons are written in the candidates' own
CRS (densified first, so a polygon stays true in degrees or feet).

Defaults, from how items lie (../shared/domain/ORDNANCE.md and IMAS practice):

- linking distance: anti-personnel mines 20 m (clusters around paths, PFM-1 ellipses of tens of metres with
  items a few metres apart), anti-tank mines 25 m (rows several metres apart, often in bands), UXO 30 m
  (submunition footprints of 100-200 m with items tens of metres apart). Candidates closer than twice the
  buffer end in one area whatever the linking distance, since their buffers overlap;
- buffer around the evidence: 10 m for mines, 15 m for UXO: more than the spacing at which a pattern's next
  item lies, so an area's edge is not drawn through the middle of a pattern;
- minimum evidence: one candidate at or above the model's operating threshold. Recall comes first: a single
  unconfirmed mine is a suspected hazard until someone looks.

Where a model's false alarms lie closer together than the linking distance (hundreds per hectare), unreviewed
candidates chain into one area over the whole survey. ``density_alpha`` (off by default) keeps, among unreviewed
candidates, only those where they cluster beyond chance: the number of unreviewed candidates within a candidate's
linking distance is tested against a uniform scatter at the run's own rate (unreviewed candidates per scanned
hectare, a Poisson count), at ``density_alpha`` over the whole run (Bonferroni over its candidates). Candidates
within linking distance of such a dense one join it (the cluster's edge); the rest stay points to review.
Confirmed items are evidence whatever the density.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from ordnance.inference.errors import InputError
from ordnance.inference.styles import write_styles
from pyproj import CRS, Geod, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

LAYER = "hazard_areas"
RULES_FILE = "hazard_areas.json"
CLASSES = ("ap_mine", "at_mine", "uxo")
FIELDS = (
    "id",
    "status",
    "area_ha",
    "n_ap_mine",
    "n_at_mine",
    "n_uxo",
    "n_confirmed",
    "n_rejected",
    "n_unreviewed",
    "max_score",
    "candidate_ids",
    "sources",
    "model_name",
    "model_sha256",
    "created_utc",
)


@dataclass
class AreaRules:
    """How candidates become areas.

    Attributes:
        link_m: Per class: two candidates closer than this (the larger of their two classes' distances) lie in
            one area.
        buffer_m: Per class: ground kept around the evidence (an area uses its largest member's buffer).
        min_score: Unreviewed and unsure candidates below this score are not evidence; None uses the model
            card's operating threshold.
        min_count: An area without a confirmed item needs at least this many candidates.
        densify_m: Longest polygon edge before it is reprojected into the candidates' CRS.
        density_alpha: When set, unreviewed candidates are evidence only where they cluster beyond chance at this
            run-wide significance (see the module's notes); None: every unreviewed candidate at the threshold.
    """

    # uxo: submunition footprints of 100-200 m holding tens of items thin out at their edges, where neighbours lie
    # far apart: 45 m keeps most footprints in one area when every item is found (experiments/areas/gaps.py).
    link_m: dict[str, float] = field(default_factory=lambda: {"ap_mine": 20.0, "at_mine": 25.0, "uxo": 45.0})
    buffer_m: dict[str, float] = field(default_factory=lambda: {"ap_mine": 10.0, "at_mine": 10.0, "uxo": 15.0})
    min_score: float | None = None
    min_count: int = 1
    densify_m: float = 2.0
    density_alpha: float | None = None

    def __post_init__(self) -> None:
        for name, table in (("link_m", self.link_m), ("buffer_m", self.buffer_m)):
            bad = {k: v for k, v in table.items() if not (np.isfinite(v) and v >= 0)}
            if bad:
                raise ValueError(f"{name} must be metres >= 0, got {bad}")
        if self.min_score is not None and not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")
        if self.density_alpha is not None and not 0 < self.density_alpha < 1:
            raise ValueError(f"density_alpha must be in (0, 1), got {self.density_alpha}")

    def distance(self, table: dict[str, float], name: str) -> float:
        return float(table.get(name, max(table.values(), default=0.0)))


def local_utm(lon: np.ndarray, lat: np.ndarray) -> CRS:
    """The UTM zone (WGS84) holding the centre of these points."""
    lon0, lat0 = float(np.mean(lon)), float(np.mean(lat))
    info = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon0, lat0, lon0, lat0))
    if not info:
        raise InputError(f"no UTM zone holds lon {lon0:.5f}, lat {lat0:.5f} (beyond 84 N or 80 S)", "candidates")
    return CRS.from_epsg(int(info[0].code))


def _clusters(xy: np.ndarray, link: np.ndarray) -> np.ndarray:
    """Single-linkage cluster index per point: i and j are linked when closer than max(link_i, link_j)."""
    n = len(xy)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        tree = shapely.STRtree(shapely.points(xy))
        left, right = tree.query(shapely.points(xy), predicate="dwithin", distance=float(link.max()))
        keep = left < right
        left, right = left[keep], right[keep]
        close = np.hypot(*(xy[left] - xy[right]).T) <= np.maximum(link[left], link[right])
        for i, j in zip(left[close], right[close]):
            a, b = find(int(i)), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def _join_hulls(xy: np.ndarray, group: np.ndarray, link: np.ndarray) -> np.ndarray:
    """Clusters whose convex hulls lie within the larger of their linking distances join, until none do: the hull is
    ground a cluster's evidence already claims, so a cluster beside it whose items are each beyond the linking
    distance of every item (a gap left by an item not found) still belongs to the same hazard."""
    while True:
        labels = np.unique(group)
        if len(labels) < 2:
            return group
        hulls = [shapely.convex_hull(shapely.multipoints(xy[group == g])) for g in labels]
        reach = np.array([link[group == g].max() for g in labels])
        tree = shapely.STRtree(hulls)
        left, right = tree.query(hulls, predicate="dwithin", distance=float(reach.max()))
        keep = left < right
        left, right = left[keep], right[keep]
        close = shapely.distance(np.take(hulls, left), np.take(hulls, right)) <= np.maximum(reach[left], reach[right])
        if not close.any():
            return group
        parent = {int(g): int(g) for g in labels}
        for i, j in zip(left[close], right[close]):
            a, b = _root(parent, int(labels[i])), _root(parent, int(labels[j]))
            if a != b:
                parent[max(a, b)] = min(a, b)
        group = np.array([_root(parent, int(g)) for g in group], dtype=np.int64)


def _root(parent: dict[int, int], g: int) -> int:
    while parent[g] != g:
        g = parent[g]
    return g


def poisson_tail(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """P(N >= k) for N ~ Poisson(mu), elementwise (k >= 0 integers, mu > 0), summed in log space term by term."""
    from math import lgamma

    k, mu = np.broadcast_arrays(np.asarray(k, np.int64), np.asarray(mu, np.float64))
    out = np.ones(k.shape)
    for i in np.ndindex(k.shape):
        if k[i] <= 0:
            continue
        j = np.arange(k[i], k[i] + int(mu[i] + 12 * np.sqrt(mu[i]) + 60))
        log_terms = -mu[i] + j * np.log(mu[i]) - np.array([lgamma(v + 1.0) for v in j])
        top = log_terms.max()
        out[i] = min(1.0, float(np.exp(top) * np.exp(log_terms - top).sum()))
    return out


def _dense(xy: np.ndarray, link: np.ndarray, scanned_m2: float, alpha: float) -> tuple[np.ndarray, dict]:
    """Which of these (unreviewed) candidates cluster beyond chance, and their edge: a candidate is dense when the
    others within its linking distance are more than a uniform scatter at their own rate puts there with
    probability alpha / n; one within linking distance of a dense candidate joins it."""
    n = len(xy)
    rate = n / scanned_m2
    tree = shapely.STRtree(shapely.points(xy))
    left, right = tree.query(shapely.points(xy), predicate="dwithin", distance=float(link.max()))
    pair = left != right
    left, right = left[pair], right[pair]
    near = np.hypot(*(xy[left] - xy[right]).T)
    counts = np.bincount(left[near <= link[left]], minlength=n)
    p = poisson_tail(counts, rate * np.pi * link**2)
    core = p <= alpha / n
    joined = core.copy()
    edge = core[right] & (near <= np.maximum(link[left], link[right]))
    joined[left[edge]] = True
    stats = {"alpha": alpha, "rate_per_ha": rate * 10_000, "tested": n, "dense": int(core.sum()),
             "edge": int((joined & ~core).sum()), "left_as_points": int((~joined).sum())}  # fmt: skip
    return joined, stats


def derive_areas(
    table: dict, crs_wkt: str | None, rules: AreaRules, model: dict, source: Path, scanned_m2: float | None = None
) -> dict:
    """Areas of one run's candidates.

    Args:
        table: Candidate fields (``read_candidates``): class, score, lon, lat, id, review_status, source.
        crs_wkt: The candidates' CRS (None: not georeferenced, refused).
        rules: Linking, buffer and evidence rules.
        model: {"name", "sha256", "score_threshold"} of the model that scored the run.
        source: The GeoPackage, named in errors.
        scanned_m2: Ground the run scanned (its manifest's hectares); needed by ``rules.density_alpha``.

    Returns:
        {"geometry": WKB polygons in ``crs_wkt``, "fields": {name: values}, "rules": the rules used, "summary"}.
    """
    if crs_wkt is None:
        raise InputError("candidates are not georeferenced (frames or bare tiles): no area can be drawn", source)
    status = np.asarray(table["review_status"], dtype=object).astype(str)
    score = np.asarray(table["score"], dtype=np.float64)
    cls = np.asarray(table["class"], dtype=object).astype(str)
    lon, lat = np.asarray(table["lon"], np.float64), np.asarray(table["lat"], np.float64)
    threshold = rules.min_score if rules.min_score is not None else model.get("score_threshold")
    if threshold is None:
        raise InputError("the model card has no operating threshold; give --min-score", source)
    confirmed = status == "confirmed"
    evidence = confirmed | (np.isin(status, ["unreviewed", "unsure"]) & (score >= threshold))
    evidence &= np.isfinite(lon) & np.isfinite(lat)
    used = {**asdict(rules), "min_score": float(threshold)}
    empty = {"geometry": np.array([], dtype=object), "fields": _empty_fields(), "rules": used}
    if not evidence.any():
        return empty | {"summary": {"areas": 0, "evidence": 0}}
    utm = local_utm(lon[evidence], lat[evidence])
    to_utm = Transformer.from_crs(CRS.from_epsg(4326), utm, always_xy=True)
    every_xy = np.c_[to_utm.transform(lon, lat)]
    if rules.density_alpha is not None:
        if not (scanned_m2 and scanned_m2 > 0):
            raise InputError("the density rule needs the scanned area (the run's manifest records it)", source)
        unreviewed = np.flatnonzero(evidence & ~confirmed)
        if len(unreviewed):
            u_link = np.array([rules.distance(rules.link_m, c) for c in cls[unreviewed]])
            keep, stats = _dense(every_xy[unreviewed], u_link, scanned_m2, rules.density_alpha)
            evidence[unreviewed[~keep]] = False
            used["density"] = stats
            if not evidence.any():
                return empty | {"rules": used, "summary": {"areas": 0, "evidence": 0}}
    idx = np.flatnonzero(evidence)
    xy = every_xy[idx]
    link = np.array([rules.distance(rules.link_m, c) for c in cls[idx]])
    buffer = np.array([rules.distance(rules.buffer_m, c) for c in cls[idx]])
    group = _join_hulls(xy, _clusters(xy, link), link)
    shapes = []
    for g in np.unique(group):
        members = group == g
        hull = shapely.convex_hull(shapely.multipoints(xy[members]))
        shapes.append(shapely.buffer(hull, float(buffer[members].max()), quad_segs=8))
    parts = shapely.get_parts(shapely.union_all(shapes))  # touching areas become one
    tree = shapely.STRtree(parts)
    part_of = np.full(len(idx), -1)
    hit_pt, hit_part = tree.query(shapely.points(xy), predicate="intersects")
    part_of[hit_pt] = hit_part
    inside_any = np.full(len(status), -1)
    q_pt, q_part = tree.query(shapely.points(every_xy[np.isfinite(every_xy).all(1)]), predicate="intersects")
    inside_any[np.flatnonzero(np.isfinite(every_xy).all(1))[q_pt]] = q_part
    from_utm = Transformer.from_crs(utm, CRS.from_user_input(crs_wkt), always_xy=True)
    to_wgs = Transformer.from_crs(utm, CRS.from_epsg(4326), always_xy=True)
    geod = Geod(ellps="WGS84")
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = []
    for p, polygon in enumerate(parts):
        members = idx[part_of == p]
        n_conf = int(confirmed[members].sum())
        if n_conf == 0 and len(members) < rules.min_count:
            continue
        dense = shapely.segmentize(polygon, rules.densify_m)
        lonlat = shapely.transform(dense, lambda c: np.c_[to_wgs.transform(c[:, 0], c[:, 1])])
        area_m2 = abs(geod.geometry_area_perimeter(lonlat)[0])
        in_area = inside_any == p
        rows.append(
            {
                "geometry": shapely.transform(dense, lambda c: np.c_[from_utm.transform(c[:, 0], c[:, 1])]),
                "status": "CHA" if n_conf else "SHA",
                "area_ha": area_m2 / 10_000,
                **{f"n_{c}": int((cls[members] == c).sum()) for c in CLASSES},
                "n_confirmed": n_conf,
                "n_rejected": int((in_area & (status == "rejected")).sum()),
                "n_unreviewed": int(np.isin(status[members], ["unreviewed", "unsure"]).sum()),
                "max_score": float(score[members].max()),
                "candidate_ids": ",".join(str(int(i)) for i in np.sort(np.asarray(table["id"])[members].astype(int))),
                "sources": ";".join(sorted({str(s) for s in np.asarray(table["source"], dtype=object)[members]})),
                "model_name": str(model.get("name", "")),
                "model_sha256": str(model.get("sha256", "")),
                "created_utc": created,
            }
        )
    rows.sort(key=lambda r: (r["status"] != "CHA", -r["max_score"]))  # CHA first, then by evidence
    for k, row in enumerate(rows, 1):
        row["id"] = f"HA-{k:04d}"
    if not rows:
        return empty | {"summary": {"areas": 0, "evidence": int(evidence.sum())}}
    fields = {f: np.array([r[f] for r in rows]) for f in FIELDS}
    geometry = np.array([shapely.to_wkb(r["geometry"]) for r in rows], dtype=object)
    summary = {
        "areas": len(rows),
        "cha": int(sum(r["status"] == "CHA" for r in rows)),
        "sha": int(sum(r["status"] == "SHA" for r in rows)),
        "area_ha": float(sum(r["area_ha"] for r in rows)),
        "evidence": int(evidence.sum()),
    }
    if "density" in used:
        summary["density"] = used["density"]
    return {"geometry": geometry, "fields": fields, "rules": used, "summary": summary, "crs_wkt": crs_wkt}


def _empty_fields() -> dict[str, np.ndarray]:
    floats, ints = {"area_ha", "max_score"}, {f for f in FIELDS if f.startswith("n_")}
    return {f: np.array([], dtype=float if f in floats else int if f in ints else object) for f in FIELDS}


def derive_run_areas(out_dir: Path, rules: AreaRules | None = None, survey_date: str | None = None) -> dict:
    """Areas of the scoring run in ``out_dir``: layer ``hazard_areas`` written into candidates.gpkg (the file
    replaced atomically), hazard_areas.geojson, .kml, .json and mine_action.csv beside it. Without ``rules`` or
    ``survey_date``, those of the run's last derivation, else the defaults and the inputs' TIFF date. Returns the
    summary."""
    import shutil

    from ordnance.inference.review import read_candidates
    from ordnance.inference.writers import atomic_path, read_manifest

    out_dir = Path(out_dir)
    gpkg = out_dir / "candidates.gpkg"
    meta, _, table = read_candidates(gpkg)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.exists():
        raise InputError("no manifest.json here: the model that scored the run is unknown", out_dir)
    manifest = read_manifest(manifest_path)
    saved = read_settings(out_dir)
    rules = rules or (saved[0] if saved else AreaRules())
    if survey_date is None:
        survey_date = saved[1] if saved else survey_date_of(manifest)
    model = model_of(manifest)
    scanned = manifest.get("area_scanned_ha")
    areas = derive_areas(table, meta["crs"], rules, model, gpkg, scanned * 10_000 if scanned else None)
    with atomic_path(gpkg) as tmp:
        shutil.copyfile(gpkg, tmp)
        write_area_layer(tmp, areas, meta["crs"])
        write_styles(tmp, ["hazard_areas"])
    write_area_exports(out_dir, areas, meta["crs"], table, model, survey_date)
    return areas["summary"] | {"rules": areas["rules"], "survey_date": survey_date}


def write_area_layer(gpkg: Path, areas: dict, crs_wkt: str) -> None:
    """Write (or replace) layer ``hazard_areas`` in ``gpkg``, which the caller writes atomically."""
    pyogrio.raw.write(
        gpkg,
        areas["geometry"],
        field_data=[areas["fields"][f] for f in FIELDS],
        fields=list(FIELDS),
        layer=LAYER,
        driver="GPKG",
        geometry_type="MultiPolygon",
        crs=crs_wkt,
        promote_to_multi=True,
    )


def write_area_exports(out_dir: Path, areas: dict, crs_wkt: str, table: dict, model: dict, survey_date: str) -> None:
    """hazard_areas.geojson and .kml in WGS84, mine_action.csv, and hazard_areas.json (rules, survey date and
    summary), each atomically."""
    from ordnance.inference.writers import atomic_path, write_json

    to_wgs = Transformer.from_crs(CRS.from_user_input(crs_wkt), CRS.from_epsg(4326), always_xy=True)
    geoms = shapely.from_wkb(areas["geometry"]) if len(areas["geometry"]) else np.array([], dtype=object)
    lonlat = [shapely.transform(g, lambda c: np.c_[to_wgs.transform(c[:, 0], c[:, 1])]) for g in geoms]
    wkb = np.array([shapely.to_wkb(g) for g in lonlat], dtype=object)
    for suffix, driver, extra in (
        ("geojson", "GeoJSON", None),
        ("kml", "KML", {"NameField": "id", "DescriptionField": "status"}),
    ):
        path = out_dir / f"{LAYER}.{suffix}"
        with atomic_path(path) as tmp:
            pyogrio.raw.write(tmp, wkb, field_data=[areas["fields"][f] for f in FIELDS], fields=list(FIELDS),
                              layer=LAYER, driver=driver, geometry_type="MultiPolygon", crs="EPSG:4326",
                              promote_to_multi=True, dataset_options=extra)  # fmt: skip
    write_mine_action_csv(out_dir, table, areas, model, survey_date)
    write_json(out_dir / RULES_FILE, {"rules": areas["rules"], "survey_date": survey_date, "summary": areas["summary"]})


MINE_ACTION_FIELDS = (
    "record_type",
    "record_id",
    "area_id",
    "status",
    "class",
    "score",
    "lat",
    "lon",
    "mgrs",
    "area_ha",
    "n_items",
    "survey_date",
    "source",
    "model",
    "model_sha256",
    "processed_utc",
    "wkt",
)


def write_mine_action_csv(out_dir: Path, table: dict, areas: dict, model: dict, survey_date: str) -> Path:
    """mine_action.csv: one row per candidate, then one per area, in the columns of ``MINE_ACTION_FIELDS``
    (documented in README.md, "Mine-action export"). Coordinates are WGS84 decimal degrees; MGRS at 1 m; an area's
    point is a point inside it, and its polygon is WKT in WGS84."""
    import csv

    import mgrs
    from ordnance.inference.writers import atomic_path

    grid = mgrs.MGRS()

    def mgrs_of(lat: float, lon: float) -> str:
        return (
            grid.toMGRS(lat, lon, MGRSPrecision=5) if np.isfinite(lat) and np.isfinite(lon) and -80 <= lat <= 84 else ""
        )

    ids = np.asarray(table["id"]).astype(int)
    area_of = {}
    for area_id, members in zip(areas["fields"]["id"], areas["fields"]["candidate_ids"]):
        for cid in str(members).split(","):
            if cid:
                area_of[int(cid)] = str(area_id)
    model_label, sha = str(model.get("name", "")), str(model.get("sha256", ""))
    rows = []
    for k, cid in enumerate(ids):
        lat, lon = float(table["lat"][k]), float(table["lon"][k])
        rows.append({
            "record_type": "candidate", "record_id": str(cid), "area_id": area_of.get(int(cid), ""),
            "status": str(table["review_status"][k]), "class": str(table["class"][k]),
            "score": f"{float(table['score'][k]):.4f}", "lat": f"{lat:.7f}", "lon": f"{lon:.7f}",
            "mgrs": mgrs_of(lat, lon), "area_ha": "", "n_items": "", "survey_date": survey_date,
            "source": str(table["source"][k]), "model": model_label, "model_sha256": sha,
            "processed_utc": str(table.get("processed_utc", [""] * len(ids))[k]), "wkt": "",
        })  # fmt: skip
    crs = areas.get("crs_wkt")
    if len(areas["geometry"]) and crs:
        to_wgs = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
        f = areas["fields"]
        for k, wkb in enumerate(areas["geometry"]):
            polygon = shapely.transform(shapely.from_wkb(wkb), lambda c: np.c_[to_wgs.transform(c[:, 0], c[:, 1])])
            inside = polygon.representative_point()
            counts = {c: int(f[f"n_{c}"][k]) for c in CLASSES}
            rows.append({
                "record_type": "area", "record_id": str(f["id"][k]), "area_id": str(f["id"][k]),
                "status": str(f["status"][k]), "class": ";".join(c for c in CLASSES if counts[c]),
                "score": f"{float(f['max_score'][k]):.4f}", "lat": f"{inside.y:.7f}", "lon": f"{inside.x:.7f}",
                "mgrs": mgrs_of(inside.y, inside.x), "area_ha": f"{float(f['area_ha'][k]):.4f}",
                "n_items": str(sum(counts.values())), "survey_date": survey_date, "source": str(f["sources"][k]),
                "model": model_label, "model_sha256": sha, "processed_utc": str(f["created_utc"][k]),
                "wkt": shapely.to_wkt(polygon, rounding_precision=7),
            })  # fmt: skip
    path = Path(out_dir) / "mine_action.csv"
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MINE_ACTION_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def survey_date_of(manifest: dict) -> str:
    """The acquisition date of the run's first input that records one (TIFF DateTime, YYYY-MM-DD), else ""."""
    import rasterio

    for entry in manifest.get("inputs", []):
        try:
            with rasterio.open(entry["path"]) as src:
                stamp = src.tags().get("TIFFTAG_DATETIME", "")
        except (rasterio.errors.RasterioIOError, KeyError, TypeError):
            continue
        if len(stamp) >= 10 and stamp[4] == ":" and stamp[7] == ":":
            return stamp[:10].replace(":", "-")
    return ""


def read_settings(out_dir: Path) -> tuple[AreaRules, str] | None:
    """The rules and survey date of the run's last ``ordnance areas`` (None when areas were never derived
    there)."""
    path = Path(out_dir) / RULES_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        rules = saved["rules"]
        return AreaRules(**{k: rules[k] for k in ("link_m", "buffer_m", "min_count", "densify_m")},
                         min_score=rules["min_score"], density_alpha=rules.get("density_alpha")
                         ), str(saved["survey_date"])  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError("not the rules file 'ordnance areas' writes (corrupt or edited)", path) from None


def model_of(manifest: dict) -> dict:
    """Name, sha256 and operating threshold of the model that scored a run (from its manifest)."""
    card = manifest["model"]["card"]
    card = json.loads(card) if isinstance(card, str) else card
    return {
        "name": f"{card.get('model_name', '')} {card.get('model_version', '')}".strip(),
        "sha256": manifest["model"].get("sha256", ""),
        "score_threshold": card.get("score_threshold"),
    }


def has_area_layer(gpkg: Path) -> bool:
    return LAYER in {str(name) for name, _ in pyogrio.list_layers(gpkg)}
