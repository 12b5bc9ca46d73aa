"""The main job's steps on tiny settings (default suite), and the whole job on its defaults (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ordnance.inference.session import open_session

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.train


def test_main_job_steps_on_tiny_settings(tmp_path, capsys):
    from ordnance.training.demo import print_summary, run

    summary = run(tmp_path / "demo", config=REPO / "configs" / "tiny.yaml", mosaic_px=700, train_args=[], seed=7)
    assert summary["items_present"] > 0
    evaluation = json.loads((tmp_path / "demo" / "evaluation.json").read_text())
    # the summary's count is the evaluation's: every truth item not listed as missed was found
    assert summary["items_found"] == summary["items_present"] - len(evaluation["missed"])
    assert summary["hectares_per_hour"] > 0
    for name in ("gpkg", "geojson", "csv", "kml", "manifest", "model", "evaluation"):
        assert Path(summary["outputs"][name]).exists(), name
    card = open_session(summary["outputs"]["model"]).card
    assert card.tile_size_px == 256 and card.parity["fp32"]["matched_share"] >= 0.995
    tiny = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    assert summary["training"]["detector"] == tiny["model"]["model"] and summary["training"]["steps"] > 0
    assert summary["scoring"]["tile_px"] == 256
    assert evaluation["overall"]["n_truth"] == summary["items_present"]
    print_summary(summary)
    printed = capsys.readouterr().out
    assert f"items found: {summary['items_found']} of {summary['items_present']} present" in printed


@pytest.mark.slow
def test_main_job_on_defaults(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ordnance.training.demo", "--out", str(tmp_path / "demo")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["items_present"] > 0 and summary["items_found"] > 0
    assert (tmp_path / "demo" / "scored" / "candidates.gpkg").exists()
