"""Ensembles of trained runs (training/ensemble.py, models.centernet.MapEnsemble) on tiny runs through the real CLI:
the joined checkpoint averages its members' maps, validates its own operating point, and exports through the parity
gate into one ONNX file whose scores are the members' mean probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.train


def _best(root: Path) -> Path:
    return next(p for p in sorted(root.glob("checkpoints/*.ckpt")) if p.name.startswith("best"))


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """Two tiny runs from random init with other seeds (made once for this module's tests)."""
    from ordnance.training.cli import main

    root = tmp_path_factory.mktemp("ensemble-runs")

    def run(name: str, *extra: str) -> Path:
        cli = main(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.data_yaml", str(tiny_data),
                    "--trainer.default_root_dir", str(root / name), *extra])  # fmt: skip
        return _best(Path(cli.trainer.checkpoint_callback.dirpath).parent)

    with pytest.MonkeyPatch.context() as patch:  # restored when the runs are made
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.chdir(root)
        a = run("a", "--seed_everything", "1")
        b = run("b", "--seed_everything", "2")
    return a, b


def _recipe(tmp_path: Path, tiny_data: Path) -> Path:
    import yaml

    recipe = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    recipe["data"]["data_yaml"] = str(tiny_data)
    recipe["trainer"]["default_root_dir"] = str(tmp_path / "validate")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))
    return config


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_ensemble_averages_the_members_probabilities_validates_and_exports_as_one_file(runs, tmp_path, tiny_data):
    from ordnance.inference.card import ModelCard
    from ordnance.inference.session import open_session
    from ordnance.training import ensemble
    from ordnance.training.export import ExportSettings, export_checkpoint, load_task

    a, b = runs
    joined = ensemble.assemble([a, b])
    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    name = "heatmap.2.weight"
    assert not torch.equal(sa[f"detector.net.{name}"], sb[f"detector.net.{name}"])  # two seeds, two networks
    assert torch.equal(joined["state_dict"][f"detector.net.members.0.{name}"], sa[f"detector.net.{name}"])
    assert torch.equal(joined["state_dict"][f"detector.net.members.1.{name}"], sb[f"detector.net.{name}"])
    assert joined["hyper_parameters"]["members"] == ["centernet_resnet18", "centernet_resnet18"]
    assert [m["checkpoint"] for m in joined["ordnance_lineage"]["ensemble"]] == [str(a), str(b)]

    out = tmp_path / "pair.ckpt"
    summary = ensemble.make([a, b], out, _recipe(tmp_path, tiny_data))
    assert out.is_file() and not list(tmp_path.glob(".pair.ckpt*"))
    saved = torch.load(out, map_location="cpu", weights_only=False)["state_dict"]
    assert float(saved["operating_threshold"]) == pytest.approx(summary["operating_threshold"])
    assert float(saved["operating_validated"]) in (0.0, 1.0)

    # the ensemble's maps, against each run's own maps averaged here by hand
    task, ta, tb = load_task(out), load_task(a), load_task(b)
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        both = task.detector.net(images)
        ma, mb = ta.detector.net(images), tb.detector.net(images)
    expected = (_sigmoid(ma["heatmap"].numpy()) + _sigmoid(mb["heatmap"].numpy())) / 2
    np.testing.assert_allclose(_sigmoid(both["heatmap"].numpy()), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(both["size"].numpy(), (ma["size"].numpy() + mb["size"].numpy()) / 2, atol=1e-5)

    # one ONNX file, through the parity gate, with the ensemble's validated threshold on its card; its best score
    # per tile is the highest 3 x 3 peak of the hand-averaged map
    onnx_path = tmp_path / "pair.onnx"
    report = export_checkpoint(out, onnx_path, ExportSettings(parity_tiles=4))
    card = ModelCard.from_json(json.dumps(report["card"]))
    assert card.model_name == "ensemble(centernet_resnet18+centernet_resnet18)"
    assert card.score_threshold == pytest.approx(summary["operating_threshold"], abs=1e-6)
    assert card.lineage["ensemble"][1]["checkpoint"] == str(b)
    # how far each member trained reaches the card: the tiny recipe's 4 steps, on this CPU
    assert [m["training"]["steps"] for m in card.lineage["ensemble"]] == [4, 4]
    assert card.lineage["ensemble"][0]["training"]["device"] == "cpu"
    session = open_session(onnx_path)
    uint8 = (images.numpy() * 255).round().astype(np.uint8)
    with torch.no_grad():
        ma = ta.detector.net(torch.from_numpy(uint8).float() / 255)
        mb = tb.detector.net(torch.from_numpy(uint8).float() / 255)
    mean = ((_sigmoid(ma["heatmap"].numpy()) + _sigmoid(mb["heatmap"].numpy())) / 2).max(axis=1)
    for i in range(len(uint8)):
        _, scores, _ = session.run(uint8[i : i + 1])
        assert scores[0].max() == pytest.approx(mean[i].max(), rel=1e-3)


def test_an_ensemble_validated_on_two_views_exports_the_views_its_threshold_was_chosen_on(runs, tmp_path, tiny_data):
    """An export runs the checkpoint's own view count: validation on two views (the recipe's or the command
    line's ``model.test_flips``) writes that count beside the threshold, so the file averages the maps the
    threshold was chosen on and its card keeps the operating point validated."""
    from ordnance.inference.card import ModelCard
    from ordnance.training import ensemble
    from ordnance.training.export import ExportSettings, export_checkpoint

    a, b = runs
    recipe = _recipe(tmp_path, tiny_data)
    assert ensemble.assemble([a, b])["hyper_parameters"]["test_flips"] == 1  # before validation: one view
    two = tmp_path / "pair2.ckpt"
    summary = ensemble.make([a, b], two, recipe, ["--model.test_flips", "2"])
    assert torch.load(two, map_location="cpu", weights_only=False)["hyper_parameters"]["test_flips"] == 2
    one = tmp_path / "pair1.ckpt"
    ensemble.make([a, b], one, recipe)
    assert torch.load(one, map_location="cpu", weights_only=False)["hyper_parameters"]["test_flips"] == 1

    report = export_checkpoint(two, tmp_path / "pair2.onnx", ExportSettings(parity_tiles=2))
    card = ModelCard.from_json(json.dumps(report["card"]))
    assert card.test_flips == 2
    assert card.score_threshold == pytest.approx(summary["operating_threshold"], abs=1e-6)
    assert card.operating_point == ("validated" if summary["precision_target_met"] else "fallback")


def test_ensemble_refuses_what_it_cannot_average_in_one_line(runs, tmp_path, tiny_data):
    from click.testing import CliRunner
    from ordnance.training import ensemble
    from ordnance.training.ensemble import ensemble_command

    a, b = runs
    with pytest.raises(ValueError, match="at least two"):
        ensemble.assemble([a])
    other = torch.load(b, map_location="cpu", weights_only=False)
    other["hyper_parameters"]["gsd_m"] = 0.02
    moved = tmp_path / "other_gsd.ckpt"
    torch.save(other, moved)
    config = _recipe(tmp_path, tiny_data)
    refused = CliRunner().invoke(ensemble_command, [str(a), str(moved), "-o", str(tmp_path / "x.ckpt"), "--config",
                                                    str(config)])  # fmt: skip
    assert refused.exit_code != 0
    assert f"{moved}: does not describe the same imagery" in refused.output and "gsd_m" in refused.output
    assert not (tmp_path / "x.ckpt").exists()
    missing = CliRunner().invoke(ensemble_command, [str(a), str(tmp_path / "gone.ckpt"), "-o", str(tmp_path / "y.ckpt"),
                                                    "--config", str(config)])  # fmt: skip
    assert missing.exit_code != 0 and f"{tmp_path / 'gone.ckpt'}: checkpoint does not exist" in missing.output


def _content_keys(folder: Path) -> set[str]:
    """The first 16 hex digits of each image file's sha256, computed here from the bytes."""
    import hashlib

    return {hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in folder.iterdir() if p.is_file()}


def _leaky_data(tmp_path: Path, tiny_data: Path, train: str, val: str) -> Path:
    """A data.yaml over the tiny set's folders with other train and val splits."""
    import yaml

    spec = yaml.safe_load(tiny_data.read_text())
    spec.update(path=str(tiny_data.parent), train=train, val=val)
    out = tmp_path / f"{train.split('/')[0]}-{val.split('/')[0]}.yaml"
    out.write_text(yaml.safe_dump(spec))
    return out


def test_runs_keep_what_they_trained_on_and_an_ensemble_is_refused_a_split_they_trained_on(runs, tmp_path, tiny_data):
    from click.testing import CliRunner
    from ordnance.datasets.records import DatasetError
    from ordnance.inference.cli.main import cli
    from ordnance.training import ensemble

    a, b = runs
    train_keys = _content_keys(tiny_data.parent / "train" / "images")
    assert len(train_keys) == 8
    for run in (a, b):
        saved = torch.load(run, map_location="cpu", weights_only=False)["ordnance_training_images"]
        assert set(saved) == train_keys  # every training image, none of the validation split's
    assert not train_keys & _content_keys(tiny_data.parent / "valid" / "images")

    leaky = _recipe(tmp_path, _leaky_data(tmp_path, tiny_data, "train/images", "train/images"))
    out = tmp_path / "leaky.ckpt"
    with pytest.raises(DatasetError, match=r"validation split holds \d+ annotated image\(s\) this checkpoint was"):
        ensemble.make([a, b], out, leaky)
    assert not out.exists() and not list(tmp_path.glob(".leaky.ckpt*"))  # no file with an unvalidated threshold

    # one run validated on its own training images, through the command line: one line, non-zero exit
    result = CliRunner().invoke(cli, ["train", "validate", "--config", str(leaky), "--ckpt_path", str(a),
                                      "--trainer.logger", "false"])  # fmt: skip
    assert result.exit_code != 0
    last = result.output.strip().splitlines()[-1]
    assert "annotated image(s) this checkpoint was trained on" in last and "Traceback" not in result.output

    # the recipe's own validation split is accepted
    ok = ensemble.make([a, b], tmp_path / "ok.ckpt", _recipe(tmp_path, tiny_data))
    assert (tmp_path / "ok.ckpt").is_file() and ok["operating_threshold"] > 0


def test_a_fine_tune_keeps_its_parents_training_images_beside_its_own(runs, fit, tmp_path, tiny_data):
    a, _ = runs
    # fine-tune from run a on the tiny set's other folder: its checkpoint names both runs' images
    data = _leaky_data(tmp_path, tiny_data, "valid/images", "valid/images")
    cli = fit("--data.data_yaml", str(data), "--model.init_checkpoint", str(a))
    saved = torch.load(cli.trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=False)
    parent = _content_keys(tiny_data.parent / "train" / "images")
    own = _content_keys(tiny_data.parent / "valid" / "images")
    assert set(saved["ordnance_training_images"]) == parent | own
