"""Training through the real CLI on tiny synthetic data: every detector, resume, fine-tune, bad config."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from ordnance.models import list_detectors

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.train


def _checkpoints(root: Path) -> list[Path]:
    return sorted(root.glob("runs/**/checkpoints/*.ckpt"))


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_trains_a_few_steps(fit, tmp_path, name):
    cli = fit("--model.model", name, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1")
    trainer = cli.trainer
    assert trainer.global_step == 2
    losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert _checkpoints(tmp_path)


def test_run_logged_to_mlflow_with_resolved_config(fit, tmp_path):
    cli = fit()
    run_id = cli.trainer.logger.run_id
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.params["model.model"] == "centernet_resnet18"
    assert "val/hazard_ap" in run.data.metrics and "val/map50" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"config.yaml", "checkpoints", "pr_curves", "previews"} <= artifacts
    saved = list((tmp_path / "runs").glob(f"*/{run_id}/config.yaml"))
    assert saved and "centernet_resnet18" in saved[0].read_text()


def test_resume_continues_from_checkpoint(fit, tmp_path, tiny_data):
    first = fit("--trainer.max_steps", "2")
    last = next(p for p in _checkpoints(tmp_path) if p.name == "last.ckpt")
    assert first.trainer.global_step == 2
    from lightning import Callback
    from ordnance.training.cli import main

    class StartStep(Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step

    cli = main(
        [
            "--config",
            str(REPO / "configs" / "tiny.yaml"),
            "--data.data_yaml",
            str(tiny_data),
            "--trainer.max_steps",
            "6",
            "--trainer.max_epochs",
            "3",
            "--trainer.default_root_dir",
            str(tmp_path / "runs2"),
        ],
        run=False,
    )
    start = StartStep()
    cli.trainer.callbacks.append(start)
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(last))
    assert start.step == 2, "resumed at the checkpoint's step"
    assert cli.trainer.global_step == 6


def test_fine_tune_with_other_class_count(fit, tmp_path):
    fit("--trainer.max_steps", "2")
    source = next(p for p in _checkpoints(tmp_path) if p.name == "last.ckpt")
    old = torch.load(source, map_location="cpu", weights_only=False)["state_dict"]
    from ordnance.training.task import DetectionTask

    task = DetectionTask(class_names=["landmine"], init_checkpoint=str(source), tile_size_px=256)
    state = task.detector.state_dict()
    assert state["net.heatmap.2.weight"].shape[0] == 1
    assert torch.equal(state["net.body.conv1.weight"], old["detector.net.body.conv1.weight"])
    assert "net.heatmap.2.weight" in task.detector.reinitialised


def test_bad_config_fails_clearly(fit, capsys):
    with pytest.raises(SystemExit) as info:
        fit("--model.no_such_key", "1")
    assert info.value.code != 0
    assert "no_such_key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fit("--model.lr", "fast")
    assert "lr" in capsys.readouterr().err
