"""``ordnance areas``: proposed hazard areas (SHA/CHA polygons) from a scoring run's candidates."""

from __future__ import annotations

from pathlib import Path

import click


def _per_class(values: tuple[str, ...], option: str) -> dict[str, float]:
    """``CLASS=METRES`` values as {class: metres}; a class the project does not have or metres that are not a
    number >= 0 are refused."""
    from ordnance.inference.areas import CLASSES

    out = {}
    for value in values:
        name, _, metres = value.partition("=")
        try:
            out[name] = float(metres)
        except ValueError:
            out[name] = float("nan")
        if not out[name] >= 0:
            raise click.BadParameter(f"{value!r}: give CLASS=METRES, metres >= 0 (e.g. ap_mine=15)", param_hint=option)
        if name not in CLASSES:
            raise click.BadParameter(f"{value!r}: unknown class {name!r} (classes: {', '.join(CLASSES)})",
                                     param_hint=option)  # fmt: skip
    return out


@click.command("areas")
@click.argument("out_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--link-m", multiple=True, metavar="CLASS=M", help="Linking distance of a class (repeatable).")
@click.option("--buffer-m", multiple=True, metavar="CLASS=M", help="Buffer around a class's evidence (repeatable).")
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    default=None,
    help="Unreviewed candidates below this are not evidence (default: the model card's operating threshold).",
)
@click.option("--min-count", type=click.IntRange(1), default=1, show_default=True,
              help="Candidates an area without a confirmed item needs.")  # fmt: skip
@click.option(
    "--density-alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Unreviewed candidates make areas only where they cluster beyond chance at this run-wide significance "
    "(e.g. 0.01); confirmed items always do. Default: every unreviewed candidate at the threshold.",
)
@click.option(
    "--survey-date",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Date of the flight, for the mine-action export (default: the mosaic's TIFF date, if it has one).",
)
def areas(
    out_dir: Path,
    link_m: tuple[str, ...],
    buffer_m: tuple[str, ...],
    min_score,
    min_count: int,
    density_alpha,
    survey_date,
) -> None:
    """Cluster the candidates of the run in OUT_DIR into proposed hazard areas.

    Writes layer hazard_areas into OUT_DIR/candidates.gpkg, and hazard_areas.geojson, .kml, .json (the rules
    used) and mine_action.csv (one row per candidate and per area, for an information-management system) beside
    it. An area with a confirmed item is a CHA proposal, any other an SHA proposal; rejected
    candidates never make one. 'ordnance review import' re-derives them with the same rules.
    """
    from ordnance.inference.areas import AreaRules, derive_run_areas

    defaults = AreaRules()
    rules = AreaRules(
        link_m=defaults.link_m | _per_class(link_m, "--link-m"),
        buffer_m=defaults.buffer_m | _per_class(buffer_m, "--buffer-m"),
        min_score=min_score,
        min_count=min_count,
        density_alpha=density_alpha,
    )
    summary = derive_run_areas(out_dir, rules, survey_date.strftime("%Y-%m-%d") if survey_date else None)
    click.echo(
        f"{summary['areas']} areas ({summary.get('cha', 0)} CHA, {summary.get('sha', 0)} SHA), "
        f"{summary.get('area_ha', 0.0):.3f} ha, from {summary['evidence']} candidates at score >= "
        f"{summary['rules']['min_score']:.3f} or confirmed"
    )
    density = summary["rules"].get("density")
    if density:
        click.echo(
            f"density rule (alpha {density['alpha']:g}): {density['dense']} unreviewed candidates cluster beyond "
            f"chance at {density['rate_per_ha']:.0f} per ha, {density['edge']} join them at their edge, "
            f"{density['left_as_points']} stay points to review"
        )
