"""``ordnance info`` prints what a field team needs to know about a model file, read from the file itself."""

from __future__ import annotations

import json

import onnx
from click.testing import CliRunner
from helpers import blob_model_bytes
from ordnance.inference.card import CARD_KEY, ModelCard
from ordnance.inference.cli.main import cli


def test_info_reads_card_and_contract_from_the_file(tmp_path):
    card = ModelCard(
        class_names=("ap_mine", "uxo"),
        tile_size_px=320,
        gsd_m=0.005,
        overlap_px=48,
        batch_size=2,
        max_detections=40,
        score_threshold=0.42,
        operating_point="fallback",
        model_name="blobnet",
        model_version="7",
        parity={"fp32": {"matched_share": 0.9975, "detections_compared": 400, "tiles": 16, "max_score_diff": 2e-4}},
        lineage={"parent": {"init_checkpoint": "runs/a.ckpt", "weights_sha256": "ab" * 32},
                 "decisions": {"confirmed": 12, "rejected": 30}, "runs": [{"run": "r1"}]},
    )  # fmt: skip
    model = tmp_path / "m.onnx"
    model.write_bytes(blob_model_bytes(320, batch=2, k=40, card=card))
    text = CliRunner().invoke(cli, ["info", str(model)])
    assert text.exit_code == 0, text.output
    out = text.output
    assert "ap_mine, uxo" in out and "0.5 cm/px" in out and "320 px, overlap 48 px, batch 2" in out
    assert "0.420 (fallback: check it on your own data)" in out
    assert "0.9975 of 400 detections matched on 16 tiles" in out
    assert "images tensor(uint8) [2, 3, 320, 320]" in out and "boxes tensor(float) [2, 40, 4]" in out
    assert "12 confirmed, 30 rejected decisions from 1 run(s)" in out and "runs/a.ckpt" in out
    raw = json.loads(CliRunner().invoke(cli, ["info", str(model), "--json"]).output)
    # The JSON card is the one stored in the file's metadata, field for field.
    stored = json.loads({p.key: p.value for p in onnx.load(model).metadata_props}[CARD_KEY])
    assert {k: raw["card"][k] for k in stored} == stored
    assert raw["input"]["shape"] == [2, 3, 320, 320]


def test_info_refuses_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("not a model")
    result = CliRunner().invoke(cli, ["info", str(bad)])
    assert result.exit_code == 1 and "notes.onnx" in result.output and "not a loadable ONNX model" in result.output
