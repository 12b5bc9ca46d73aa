"""Weight averaging across fine-tuned runs (training/soup.py) on tiny runs through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.train


def _best(root: Path) -> Path:
    return next(p for p in sorted(root.glob("checkpoints/*.ckpt")) if p.name.startswith("best"))


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """A parent run, and two runs fine-tuned from it with other seeds (made once for this module's tests)."""
    from ordnance.training.cli import main

    root = tmp_path_factory.mktemp("soup-runs")

    def run(name: str, *extra: str) -> Path:
        cli = main(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.data_yaml", str(tiny_data),
                    "--trainer.default_root_dir", str(root / name), *extra])  # fmt: skip
        return _best(Path(cli.trainer.checkpoint_callback.dirpath).parent)

    with pytest.MonkeyPatch.context() as patch:  # restored when the runs are made
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.chdir(root)
        parent = run("parent")
        a = run("a", "--model.init_checkpoint", str(parent), "--seed_everything", "1")
        b = run("b", "--model.init_checkpoint", str(parent), "--seed_everything", "2")
    return parent, a, b


def test_soup_is_the_mean_of_runs_from_one_parent_and_validates_its_own_operating_point(runs, tmp_path, tiny_data):
    from ordnance.training import soup

    _, a, b = runs
    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    name = "detector.net.heatmap.2.weight"
    assert not torch.equal(sa[name], sb[name])  # two seeds, two sets of weights

    mixed = soup.average_checkpoints([a, b])
    for key in (name, "detector.net.body.bn1.running_var", "detector.net.body.layer1.0.conv1.weight"):
        assert torch.allclose(mixed["state_dict"][key], (sa[key] + sb[key]) / 2)
    assert (
        mixed["state_dict"]["detector.net.body.bn1.num_batches_tracked"]
        == sa["detector.net.body.bn1.num_batches_tracked"]
    )
    assert float(mixed["state_dict"]["operating_validated"]) == -1.0  # not yet validated
    assert [entry["checkpoint"] for entry in mixed["ordnance_lineage"]["soup"]] == [str(a), str(b)]

    path = soup.save(mixed, tmp_path / "soup" / "soup.ckpt")
    config = [
        "--data.data_yaml",
        str(tiny_data),
        "--trainer.default_root_dir",
        str(tmp_path / "validate"),
    ]
    threshold, _, metrics = soup.validate_operating_point(path, REPO / "configs" / "tiny.yaml", config)
    saved = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert float(saved["operating_threshold"]) == pytest.approx(threshold)
    assert float(saved["operating_threshold"]) == pytest.approx(metrics["val/threshold"])
    assert float(saved["operating_validated"]) in (0.0, 1.0)

    # the exported model card carries the validated threshold of the soup, not of a run
    from ordnance.training.export import load_task

    task = load_task(path)
    assert float(task.operating_threshold) == pytest.approx(threshold)
    assert torch.allclose(task.state_dict()[name], (sa[name] + sb[name]) / 2)


def test_batchnorm_recalibration_estimates_statistics_of_the_training_batches(runs, tmp_path, tiny_data):
    from ordnance.training import soup

    _, a, b = runs
    path = soup.save(soup.average_checkpoints([a, b]), tmp_path / "soup.ckpt")
    extra = ["--data.data_yaml", str(tiny_data)]
    config = REPO / "configs" / "tiny.yaml"
    cli = soup._cli(config, path, extra)
    cli.datamodule.setup("fit")
    images = [batch[0] for batch in list(cli.datamodule.train_dataloader())[:3]]
    task, seen = cli.model, []
    stem = task.detector.net.body.bn1
    before = stem.running_mean.clone()
    weights = stem.weight.detach().clone()
    # independently: the stem BatchNorm's input over these batches, the mean of the per-batch channel means
    hook = stem.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].mean(dim=(0, 2, 3))))
    task.eval()
    with torch.no_grad():
        for batch in images:
            task.detector.net(task._images(batch))
    hook.remove()
    expected = torch.stack(seen).mean(0)
    assert not torch.allclose(before, expected, atol=1e-3)

    soup.update_batchnorm(task, images)
    assert torch.allclose(stem.running_mean, expected, atol=1e-5)
    assert torch.equal(stem.weight.detach(), weights)  # statistics only

    out = soup.recalibrate_batchnorm(path, config, batches=2, extra=extra)
    name = "detector.net.body.bn1.running_mean"
    assert not torch.allclose(out["state_dict"][name], before, atol=1e-3)
    assert torch.equal(
        out["state_dict"]["detector.net.heatmap.2.weight"],
        soup.average_checkpoints([a, b])["state_dict"]["detector.net.heatmap.2.weight"],
    )
    assert out["ordnance_lineage"]["batchnorm_recalibrated"]["batches"] == 2


def test_soup_refuses_runs_from_other_parents(runs, tmp_path):
    from ordnance.training import soup

    parent, a, _ = runs
    with pytest.raises(ValueError, match="lineage names no parent"):
        soup.average_checkpoints([parent, a])
    first = torch.load(a, map_location="cpu", weights_only=False)
    first["ordnance_lineage"]["parent"]["weights_sha256"] = "0" * 64  # as if fine-tuned from other weights
    first_path = tmp_path / "first.ckpt"
    torch.save(first, first_path)
    with pytest.raises(ValueError, match="fine-tuned from other weights"):
        soup.average_checkpoints([first_path, a])
    with pytest.raises(ValueError, match="at least two"):
        soup.average_checkpoints([a])


def test_soup_command_writes_a_validated_checkpoint_and_refuses_bad_input_in_one_line(runs, tmp_path, tiny_data):
    import json

    import yaml
    from click.testing import CliRunner
    from ordnance.training.soup import soup_command

    parent, a, b = runs
    recipe = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    recipe["data"]["data_yaml"] = str(tiny_data)
    recipe["trainer"]["default_root_dir"] = str(tmp_path / "validate")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "soup.ckpt"
    result = CliRunner().invoke(soup_command, [str(a), str(b), "-o", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    saved = torch.load(out, map_location="cpu", weights_only=False)["state_dict"]
    assert float(saved["operating_threshold"]) == pytest.approx(summary["operating_threshold"])
    assert float(saved["operating_validated"]) in (0.0, 1.0)
    assert not list(tmp_path.glob(".soup.ckpt*"))  # no work file left

    refused = CliRunner().invoke(soup_command, [str(parent), str(a), "-o", str(tmp_path / "x.ckpt"), "--config",
                                                str(config)])  # fmt: skip
    assert refused.exit_code != 0
    assert f"{parent}: its lineage names no parent checkpoint" in refused.output
    assert not (tmp_path / "x.ckpt").exists()
