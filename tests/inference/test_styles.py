"""The run's GeoPackage carries QGIS styles: the layer_styles table read through GDAL, the QML parsed as XML, and,
where PyQGIS is installed (Debian's python3-qgis), the layers opened and rendered by QGIS itself."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
from click.testing import CliRunner
from helpers import gaussian_blobs
from ordnance.inference.cli.main import cli

QGIS_PYTHON = "/usr/bin/python3"


def _has_pyqgis() -> bool:
    if not os.path.exists(QGIS_PYTHON):
        return False
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, env={"PATH": "/usr/bin"})
    return probe.returncode == 0


@pytest.fixture
def styled_run(tmp_path, blob_model, write_geotiff):
    """A scored run with areas and one confirmed candidate: every layer of candidates.gpkg styled."""
    import json

    from ordnance.inference.review import run_id

    mosaic = write_geotiff(gaussian_blobs(300, 480, [(60, 60), (200, 120), (330, 260), (420, 60)]), name="s.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out),
                                      "--no-progress", "--no-review", "--areas"])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    decisions = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None, "properties": {
        "id": 1, "review_status": "confirmed", "run": run_id(manifest)}}]}  # fmt: skip
    (tmp_path / "d.geojson").write_text(json.dumps(decisions))
    assert CliRunner().invoke(cli, ["review", "import", str(out), str(tmp_path / "d.geojson")]).exit_code == 0
    return out


def test_every_layer_has_a_default_style_readable_through_gdal(styled_run):
    gpkg = styled_run / "candidates.gpkg"
    layers = {str(name) for name, _ in pyogrio.list_layers(gpkg)}
    assert {"candidates", "coverage", "hazard_areas", "layer_styles"} <= layers
    meta, _, _, fields = pyogrio.raw.read(gpkg, layer="layer_styles", read_geometry=False)
    styles = dict(zip(meta["fields"], fields))
    assert sorted(styles["f_table_name"]) == ["candidates", "coverage", "hazard_areas"]
    assert all(int(v) == 1 for v in styles["useAsDefault"])
    qml = dict(zip(styles["f_table_name"], styles["styleQML"]))
    # candidates: a rule per class and review state, each filter naming fields the layer has
    root = ET.fromstring(qml["candidates"].split("\n", 1)[1])
    assert root.tag == "qgis" and root.find("renderer-v2").get("type") == "RuleRenderer"
    rules = root.findall("renderer-v2/rules/rule")
    symbols = {s.get("name") for s in root.findall("renderer-v2/symbols/symbol")}
    assert len(rules) == 7 and {r.get("symbol") for r in rules} == symbols
    filters = " ".join(r.get("filter") for r in rules)
    for value in ("'ap_mine'", "'at_mine'", "'uxo'", "'rejected'", "'confirmed'"):
        assert value in filters
    fields_of_layer = set(pyogrio.read_info(gpkg, layer="candidates")["fields"])
    assert {"class", "review_status", "score"} <= fields_of_layer
    areas = ET.fromstring(qml["hazard_areas"].split("\n", 1)[1])
    assert [r.get("filter") for r in areas.findall("renderer-v2/rules/rule")] == ['"status" = \'CHA\'',
                                                                                  '"status" = \'SHA\'']  # fmt: skip
    assert areas.find("labeling/settings/text-style").get("fieldName") == "id"
    coverage = ET.fromstring(qml["coverage"].split("\n", 1)[1])
    assert coverage.find("renderer-v2").get("type") == "singleSymbol"


@pytest.mark.skipif(not _has_pyqgis(), reason="PyQGIS (Debian's python3-qgis) is not installed")
def test_qgis_opens_the_layers_styled_and_renders_them(styled_run, tmp_path):
    """QGIS loads each layer's default style from the GeoPackage by itself and renders the map: the candidates in
    their class colour, the CHA in red."""
    script = tmp_path / "render.py"
    png = tmp_path / "map.png"
    script.write_text(f"""
import os
import sys
from qgis.core import QgsApplication, QgsVectorLayer, QgsMapSettings, QgsMapRendererParallelJob, QgsRectangle
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor
app = QgsApplication([], False)
app.initQgis()
gpkg = {str(styled_run / "candidates.gpkg")!r}
layers = []
for name in ("hazard_areas", "coverage", "candidates"):
    layer = QgsVectorLayer(f"{{gpkg}}|layername={{name}}", name, "ogr")
    assert layer.isValid(), name
    message, ok = layer.loadDefaultStyle()
    print(name, ok, layer.renderer().type(), len(layer.renderer().legendSymbolItems()), message.replace(" ", "_"))
    layers.append(layer)
settings = QgsMapSettings()
settings.setLayers(layers[::-1])  # top first: candidates over coverage over areas
extent = layers[0].extent()
extent.grow(2.0)
settings.setExtent(extent)
settings.setDestinationCrs(layers[2].crs())
settings.setOutputSize(QSize(400, 400))
settings.setBackgroundColor(QColor(255, 255, 255))
job = QgsMapRendererParallelJob(settings)
job.start()
job.waitForFinished()
job.renderedImage().save({str(png)!r}, "PNG")
sys.stdout.flush()
os._exit(0)  # PyQGIS can crash while tearing down at interpreter exit; everything is written by now
""")
    env = {"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    run = subprocess.run([QGIS_PYTHON, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line.split(" ", 1)[0] in
                 ("candidates", "coverage", "hazard_areas"))  # fmt: skip
    # "Loaded_from_Provider": the style came from the GeoPackage's layer_styles table, not from a .qml file
    assert lines["candidates"].split() == ["True", "RuleRenderer", "7", "Loaded_from_Provider"]
    assert lines["hazard_areas"].split() == ["True", "RuleRenderer", "2", "Loaded_from_Provider"]
    assert lines["coverage"].split() == ["True", "singleSymbol", "1", "Loaded_from_Provider"]
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    red_fill = (np.abs(pixels - [243, 165, 166]) < 40).all(1)  # the CHA's half-transparent red on white
    ap_red = (np.abs(pixels - [227, 26, 28]) < 30).all(1)  # AP-mine markers (the blob model's class 0)
    assert red_fill.sum() > 1000, "no CHA fill rendered"
    assert ap_red.sum() > 20, "no candidate marker rendered"
