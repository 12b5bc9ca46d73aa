"""Training through the real CLI on tiny synthetic data: every detector, resume, fine-tune, bad config."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
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


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, artifacts served by the server)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(server_dir / "artifacts"), "--workers", "1"]
    log = (server_dir / "server.log").open("w")
    process = subprocess.Popen(command, cwd=server_dir, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # the server's start-up takes minutes on a starved CPU
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(server_dir / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri, server_dir
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_run_logged_to_a_real_mlflow_server(fit, mlflow_server, monkeypatch):
    uri, server_dir = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cli = fit()
    run_id = cli.trainer.logger.run_id
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.model"] == "centernet_resnet18"
    assert "val/hazard_ap" in run.data.metrics
    history = client.get_metric_history(run_id, "train/loss")
    assert history and all(m.value == m.value for m in history)  # logged, and not NaN
    assert {"config.yaml", "checkpoints"} <= {a.path for a in client.list_artifacts(run_id)}
    # the artifacts went through the server into its own store, not into the client's folder
    stored = list((server_dir / "artifacts").rglob("*.ckpt"))
    assert stored and stored[0].stat().st_size > 1_000_000
    assert (server_dir / "mlflow.db").stat().st_size > 0


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_cpu_only_where_native(fit, monkeypatch, native):
    import ordnance.training.cli as train_cli

    monkeypatch.setattr(train_cli, "cpu_has_bf16", lambda: native)
    args = ("--trainer.precision", "bf16-mixed", "--trainer.accelerator", "cpu", "--model.channels_last", "true")
    cli = fit(*args, "--trainer.max_steps", "2")
    assert cli.trainer.precision == ("bf16-mixed" if native else "32-true")
    assert cli.trainer.global_step == 2
    # the fallback is written where the card reads it: the checkpoint's lineage
    saved = torch.load(cli.trainer.checkpoint_callback.last_model_path, map_location="cpu", weights_only=False)
    record = saved["ordnance_lineage"]["training"]
    assert record["precision"] == ("bf16-mixed" if native else "32-true") and record["device"] == "cpu"
    assert record.get("precision_requested") == (None if native else "bf16-mixed")
    assert record["steps"] == 2 and record["max_steps"] == 2
    conv = cli.model.detector.net.body.conv1.weight
    assert conv.dtype == torch.float32 and conv.is_contiguous(memory_format=torch.channels_last)


def test_weight_averaging_checkpoint_holds_average_and_validated_threshold(fit, tmp_path):
    """With experiments/recipes/ema.yaml's callback, checkpoints hold the averaged weights (Lightning keeps the
    live ones beside them) and the operating point of the last validation, not an average of thresholds."""
    import yaml

    config = yaml.safe_load((REPO / "experiments" / "recipes" / "ema.yaml").read_text())
    config["trainer"]["callbacks"][0]["init_args"].update(decay=0.5, update_starting_at_step=0)
    (tmp_path / "ema.yaml").write_text(yaml.safe_dump(config))
    cli = fit("--config", str(tmp_path / "ema.yaml"))
    validated = float(cli.trainer.callback_metrics["val/threshold"])
    best = next(p for p in _checkpoints(tmp_path) if p.name.startswith("best"))
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    assert float(checkpoint["state_dict"]["operating_threshold"]) == pytest.approx(validated)
    live = checkpoint["current_model_state"]
    averaged = checkpoint["state_dict"]
    name = "detector.net.heatmap.2.weight"
    assert not torch.equal(live[name], averaged[name])


def test_learning_rate_schedule_warms_up_then_anneals_by_steps_or_time():
    from ordnance.training.task import lr_factor

    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0) and lr_factor(100, 10, 100) == pytest.approx(0.02)
    assert lr_factor(55, 10, 100) == pytest.approx(0.51)  # half way: half way down
    # A time budget half spent at a tenth of the steps: the schedule is half way down.
    assert lr_factor(19, 10, 100, time_spent=0.5) == pytest.approx(0.51)
    assert lr_factor(19, 10, 100, time_spent=1.0) == pytest.approx(0.02)
    assert lr_factor(90, 10, 100, time_spent=0.1) == lr_factor(90, 10, 100)


def test_time_budget_ends_training_with_the_rate_annealed_and_validated(fit):
    args = ("--model.anneal_by_time", "true", "--model.warmup_steps", "1", "--model.lr", "0.001")
    budget = ("--trainer.max_steps", "10000", "--trainer.max_epochs", "1000", "--trainer.max_time", "00:00:00:12")
    # Validation by steps (as configs/synthetic.yaml), at an interval the budget never reaches.
    by_steps = ("--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", "1000")
    cli = fit(*args, *budget, *by_steps)
    trainer = cli.trainer
    assert 2 < trainer.global_step < 1000  # stopped by the time budget, not by steps
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.001 * 0.02, rel=0.25), lr  # the floor, not the ~1e-3 of a step-only schedule
    # The stop itself was validated: the final weights have metrics and a checkpoint scored on them.
    assert "val/recall" in trainer.callback_metrics
    assert trainer.checkpoint_callback.best_model_path
    # the checkpoint says the clock, not the epochs, ended the run, and how far it got
    saved = torch.load(trainer.checkpoint_callback.last_model_path, map_location="cpu", weights_only=False)
    record = saved["ordnance_lineage"]["training"]
    assert record["stopped_by"] == "max_time" and record["max_epochs"] == 1000
    assert record["epochs"] == trainer.current_epoch < 1000 and record["steps"] == trainer.global_step  # epochs run
    assert record["time_budget_s"] == pytest.approx(12.0, abs=0.5) and record["time_spent_s"] >= 12.0


def test_operating_point_says_when_the_precision_target_was_never_reached():
    from ordnance.inference.metrics import match_points
    from ordnance.training.task import operating_point

    # Three predictions at 0.9, 0.8, 0.7; only the last is on the one truth item: precision 0, 0, 1/3.
    matches = [
        match_points(
            np.array([[0.0, 0], [50, 50], [100, 100]]),
            np.array([0.9, 0.8, 0.7]),
            np.array([[100.0, 100]]),
            np.array([5.0]),
        )
    ]
    assert operating_point(matches, 0.5) == (0.5, False)
    threshold, validated = operating_point(matches, 0.3)
    assert validated and threshold == pytest.approx(0.7)


def test_final_epoch_is_validated_between_validation_epochs(fit, tmp_path):
    """Three epochs, validation every second: Lightning alone validates epoch 1 only; the final epoch's weights
    (the annealed ones) are validated too, so the best checkpoint can be the last."""
    cli = fit("--trainer.max_steps", "-1", "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "2")
    run_id = cli.trainer.logger.run_id
    history = mlflow.MlflowClient().get_metric_history(run_id, "val/hazard_ap")
    steps_per_epoch = cli.trainer.num_training_batches
    assert sorted(m.step for m in history) == [2 * steps_per_epoch - 1, 3 * steps_per_epoch - 1]


@pytest.mark.parametrize(
    ("epoch", "max_epochs", "remaining", "longest", "expected"),
    [
        (9, 10, None, 0.0, True),  # last by count
        (8, 10, None, 60.0, False),
        (3, 44, 80.0, 60.0, True),  # 80 s left, epochs of 60 s: this one may be cut by the budget
        (3, 44, 100.0, 60.0, False),
        (0, 44, 10.0, 0.0, False),  # no epoch measured yet
        (3, -1, 30.0, 60.0, True),  # no epoch limit, time almost out
    ],
)
def test_may_be_last_epoch(epoch, max_epochs, remaining, longest, expected):
    from ordnance.training.callbacks import may_be_last_epoch

    assert may_be_last_epoch(epoch, max_epochs, remaining, longest) is expected


@pytest.mark.parametrize("workers", [0, 1])
def test_training_samples_repeat_across_runs_and_change_across_epochs(tiny_data, workers):
    """The same seed gives the same training batches run after run; each epoch draws new crops, pastes and
    augmentations, persistent loader workers included (their torch seed is set once)."""
    import lightning as L
    from ordnance.datasets.composite import CopyPaste
    from ordnance.datasets.datamodule import DetectionDataModule

    def epochs() -> list[bytes]:
        L.seed_everything(0, verbose=False)
        module = DetectionDataModule(str(tiny_data), crop_px=128, tile_size_px=256, batch_size=2, num_workers=workers,
                                     copy_paste=CopyPaste(p=1.0, real_items=2))  # fmt: skip
        module.setup("fit")
        loader = module.train_dataloader()
        return [b"".join(images.numpy().tobytes() for images, *_ in loader) for _ in range(3)]

    first, second = epochs(), epochs()
    assert first == second
    assert len(set(first)) == 3


@pytest.mark.parametrize(
    ("workers", "threads", "expected"), [(1, None, "cores-1"), (0, None, "default"), (1, 0, "default"), (1, 2, 2)]
)
def test_training_threads_leave_cores_to_loader_workers(tiny_data, tmp_path, workers, threads, expected):
    """On a CPU the training steps run with one intra-op thread fewer per loader worker (at least one); validation
    and whatever follows fit get torch's count back. No workers, or ``threads=0``, keep torch's count. The
    checkpoint records the training steps' count. The count comes from the recipe's ``training_threads``."""
    import os

    import lightning as L
    from ordnance.training.cli import main

    class Record(L.Callback):
        def __init__(self):
            self.train, self.val = set(), set()

        def on_train_batch_end(self, *args):
            self.train.add(torch.get_num_threads())

        def on_validation_batch_end(self, *args):
            self.val.add(torch.get_num_threads())

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    default = cores + 2  # a count no rule of the callback gives, so that each phase's count tells which rule ran
    torch.set_num_threads(default)
    try:
        cli = main(["--config", str(REPO / "configs" / "tiny.yaml"), "--data.data_yaml", str(tiny_data),
                    "--data.num_workers", str(workers), "--trainer.default_root_dir", str(tmp_path / "runs"),
                    "--trainer.check_val_every_n_epoch", "1",
                    *(["--training_threads", str(threads)] if threads is not None else [])], run=False)  # fmt: skip
        record = Record()
        cli.trainer.callbacks.append(record)
        cli.trainer.fit(cli.model, cli.datamodule)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    want = {"cores-1": max(1, cores - 1), "default": default}.get(expected, expected)
    assert record.train == {want}
    assert record.val == {default}
    assert after == default
    # the checkpoint's lineage (and so the card) says what the training steps ran with
    saved = torch.load(cli.trainer.checkpoint_callback.last_model_path, map_location="cpu", weights_only=False)
    assert saved["ordnance_lineage"]["training"]["cpu_threads"] == want


def test_training_threads_refuses_a_negative_count(tiny_data, tmp_path, capsys):
    from ordnance.training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(REPO / "configs" / "tiny.yaml"), "--data.data_yaml", str(tiny_data),
              "--trainer.default_root_dir", str(tmp_path / "runs"), "--training_threads", "-1"], run=False)  # fmt: skip
    assert exit_info.value.code != 0
    assert "training_threads" in capsys.readouterr().err


@pytest.mark.parametrize("flips", [None, 2])
def test_evaluation_settings_on_the_command_line_win_over_the_checkpoint(fit, tmp_path, tiny_data, flips):
    """``--ckpt_path`` takes the model's arguments from the checkpoint, but ``--model.test_flips`` given for a test
    run is the run's own: the network evaluates that many views."""
    from ordnance.training.cli import main

    trained = fit()
    ckpt = trained.trainer.checkpoint_callback.last_model_path
    extra = [] if flips is None else ["--model.test_flips", str(flips)]
    cli = main(["test", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.data_yaml", str(tiny_data),
                "--trainer.default_root_dir", str(tmp_path / "runs"), "--ckpt_path", ckpt, *extra])  # fmt: skip
    assert cli.model.detector.net.test_flips == (flips or 1)
    assert cli.model.hparams.lr == trained.model.hparams.lr  # the rest still from the checkpoint
