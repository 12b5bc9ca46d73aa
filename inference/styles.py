"""QGIS styles stored in the run's GeoPackage, so its layers open styled in QGIS with no edits.

QGIS reads a layer's default style from the GeoPackage table ``layer_styles`` (one row per layer, the style as
QML in ``styleQML``, ``useAsDefault`` set). The styles:

- ``candidates``: one colour per class (AP mine red circle, AT mine purple square, UXO orange triangle), the
  marker growing with the score; confirmed candidates outlined in black, rejected ones small grey crosses.
- ``coverage``: the scanned area as a blue outline, no fill.
- ``hazard_areas``: CHA proposals red, SHA proposals orange, half-transparent fill with a solid outline,
  labelled with their id.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

CLASS_STYLE = {  # class -> (label, colour, marker shape)
    "ap_mine": ("AP mine", "227,26,28,255", "circle"),
    "at_mine": ("AT mine", "106,61,154,255", "square"),
    "uxo": ("UXO", "255,127,0,255", "triangle"),
}
HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _options(values: dict[str, str]) -> str:
    items = "".join(f'<Option type="QString" name="{k}" value={quoteattr(v)}/>' for k, v in values.items())
    return f'<Option type="Map">{items}</Option>'


def _marker(name: str, colour: str, shape: str, outline: str, outline_width: str, size_expr: str) -> str:
    layer = _options(
        {
            "color": colour,
            "name": shape,
            "outline_color": outline,
            "outline_width": outline_width,
            "outline_width_unit": "MM",
            "size": "3",
            "size_unit": "MM",
            "joinstyle": "miter",
            "angle": "0",
        }
    )
    size = (
        '<data_defined_properties><Option type="Map"><Option type="QString" name="name" value=""/>'
        '<Option type="Map" name="properties"><Option type="Map" name="size">'
        '<Option type="bool" name="active" value="true"/>'
        f'<Option type="QString" name="expression" value={quoteattr(size_expr)}/>'
        '<Option type="int" name="type" value="3"/></Option></Option>'
        '<Option type="QString" name="type" value="collection"/></Option></data_defined_properties>'
    )
    return (
        f'<symbol type="marker" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="SimpleMarker" enabled="1" pass="0" locked="0">{layer}{size}</layer></symbol>'
    )


def _fill(name: str, colour: str, outline: str, width: str = "0.6", style: str = "solid") -> str:
    layer = _options(
        {
            "color": colour,
            "style": style,
            "outline_color": outline,
            "outline_style": "solid",
            "outline_width": width,
            "outline_width_unit": "MM",
            "joinstyle": "miter",
        }
    )
    return (
        f'<symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="SimpleFill" enabled="1" pass="0" locked="0">{layer}</layer></symbol>'
    )


def _rules(rules: list[tuple[str, str, str]]) -> str:
    body = "".join(
        f"<rule key={quoteattr(f'r{k}')} filter={quoteattr(expr)} label={quoteattr(label)} symbol={quoteattr(sym)}/>"
        for k, (expr, label, sym) in enumerate(rules)
    )
    return f'<rules key="root">{body}</rules>'


def candidates_qml() -> str:
    size = 'scale_linear("score", 0, 1, 1.5, 5)'
    rules: list[tuple[str, str, str]] = [("\"review_status\" = 'rejected'", "rejected", "0")]
    symbols = [_marker("0", "150,150,150,255", "cross2", "150,150,150,255", "0.4", "1.5")]
    for k, (cls, (label, colour, shape)) in enumerate(CLASS_STYLE.items(), start=1):
        rules.append(
            (f"\"class\" = '{cls}' AND \"review_status\" = 'confirmed'", f"{label}, confirmed", str(2 * k - 1))
        )
        rules.append((f"\"class\" = '{cls}' AND \"review_status\" != 'rejected' AND \"review_status\" != 'confirmed'",
                      label, str(2 * k)))  # fmt: skip
        symbols.append(_marker(str(2 * k - 1), colour, shape, "0,0,0,255", "0.8", size))
        symbols.append(_marker(str(2 * k), colour, shape, "255,255,255,255", "0.2", size))
    return _document(
        f'<renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="1" forceraster="0">'
        f"{_rules(rules)}<symbols>{''.join(symbols)}</symbols>"
        '<orderby><orderByClause asc="1" nullsFirst="0">"score"</orderByClause></orderby></renderer-v2>'
    )


def coverage_qml() -> str:
    return _document(
        '<renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">'
        f"<symbols>{_fill('0', '0,0,0,0', '31,120,180,255', '0.5', 'no')}</symbols></renderer-v2>"
    )


def hazard_areas_qml() -> str:
    rules = [("\"status\" = 'CHA'", "CHA proposal", "0"), ("\"status\" = 'SHA'", "SHA proposal", "1")]
    symbols = _fill("0", "227,26,28,90", "227,26,28,255") + _fill("1", "255,127,0,70", "255,127,0,255")
    labels = (
        '<labeling type="simple"><settings calloutType="simple">'
        '<text-style fieldName="id" isExpression="0" fontSize="9" textColor="0,0,0,255"/>'
        '<text-buffer bufferDraw="1" bufferSize="1" bufferColor="255,255,255,255"/>'
        "</settings></labeling>"
    )
    return _document(
        '<renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="0" forceraster="0">'
        f"{_rules(rules)}<symbols>{symbols}</symbols></renderer-v2>{labels}"
    )


def _document(body: str) -> str:
    return f'{HEADER}<qgis version="3.22.0" styleCategories="Symbology|Labeling">{body}</qgis>\n'


STYLES = {"candidates": candidates_qml, "coverage": coverage_qml, "hazard_areas": hazard_areas_qml}


def write_styles(gpkg: Path, layers: list[str]) -> None:
    """Store the default QGIS style of each of ``layers`` in ``gpkg``'s ``layer_styles`` table (rows of other
    layers are kept; a layer's earlier row is replaced). The caller writes ``gpkg`` atomically."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with sqlite3.connect(gpkg) as db:
        geometry_column = dict(db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall())
        db.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT, "
            "f_table_schema TEXT, f_table_name TEXT, f_geometry_column TEXT, styleName TEXT, styleQML TEXT, "
            "styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT, ui TEXT, update_time DATETIME)"
        )
        contents = {r[0] for r in db.execute("SELECT table_name FROM gpkg_contents")}
        if "layer_styles" not in contents:
            db.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, last_change) "
                "VALUES ('layer_styles', 'attributes', 'layer_styles', ?)",
                (now,),
            )
        for layer in layers:
            db.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
            db.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL, ?)",
                (layer, geometry_column.get(layer, "geom"), f"ordnance {layer}", STYLES[layer](),
                 f"ordnance default style for {layer}", now),
            )  # fmt: skip
