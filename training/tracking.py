"""MLflow tracking: an embedded SQLite store in experiments/mlruns by default (so the model registry
works), or the server named by MLFLOW_TRACKING_URI or the config."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

log = logging.getLogger(__name__)

DEFAULT_STORE = Path("experiments/mlruns")


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else SQLite in experiments/mlruns under the working folder."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    DEFAULT_STORE.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"


def default_artifact_location() -> str | None:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (DEFAULT_STORE / "artifacts").resolve().as_uri()


class OrdnanceMLFlowLogger(MLFlowLogger):
    """MLFlowLogger with the project's defaults for the store and artifacts."""

    def __init__(
        self,
        experiment_name: str = "ordnance",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        log_model: bool | str = False,
    ) -> None:
        uri = tracking_uri or default_tracking_uri()
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=uri,
            artifact_location=None if tracking_uri else default_artifact_location(),
            log_model=log_model,
        )


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = json.dumps(value, default=str) if isinstance(value, list | tuple) else value
    return out


class LogConfig(SaveConfigCallback):
    """Save the resolved config beside the run, and log it to MLflow as params and as an artifact."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        logger = trainer.logger
        log_dir = trainer.log_dir
        if log_dir is None and logger is not None:  # MLflow on SQLite or a server: no local save_dir
            log_dir = os.path.join(trainer.default_root_dir, str(logger.name), str(logger.version))
        log_dir = log_dir or trainer.default_root_dir
        if trainer.is_global_zero:
            os.makedirs(log_dir, exist_ok=True)
            path = os.path.join(log_dir, self.config_filename)
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)
            log.info("resolved config: %s", path)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = trainer.logger
        if not isinstance(logger, MLFlowLogger):
            return
        flat = _flatten("", self.config.as_dict(), {})
        flat = {k: v for k, v in flat.items() if not k.startswith("config")}
        logger.log_hyperparams(flat)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)
            logger.experiment.log_artifact(logger.run_id, str(path))


class MLflowArtifacts(L.Callback):
    """After each validation: a PR curve PNG and a preview of predictions; at the end, the best checkpoint."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = trainer.logger
        matches = getattr(pl_module, "last_val_matches", None)
        if trainer.sanity_checking or not isinstance(logger, MLFlowLogger) or not matches:
            return
        from ordnance.inference.metrics import pr_curve

        thresholds, recall, precision = pr_curve(matches)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"pr_curve_epoch{trainer.current_epoch:03d}.png"
            plot_pr(recall, precision, float(pl_module.operating_threshold), thresholds, path)
            logger.experiment.log_artifact(logger.run_id, str(path), "pr_curves")
            preview = Path(tmp) / f"preview_epoch{trainer.current_epoch:03d}.png"
            if write_preview(trainer, pl_module, preview):
                logger.experiment.log_artifact(logger.run_id, str(preview), "previews")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = trainer.logger
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if isinstance(logger, MLFlowLogger) and best and Path(best).exists():
            logger.experiment.log_artifact(logger.run_id, best, "checkpoints")


def plot_pr(recall, precision, threshold: float, thresholds, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot(recall, precision, lw=1.5)
    if len(thresholds):
        i = int(np.argmin(np.abs(thresholds - threshold)))
        ax.plot(recall[i], precision[i], "o", color="crimson", label=f"operating point {threshold:.2f}")
        ax.legend(loc="lower left")
    ax.set(xlabel="hazard recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="validation PR curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_preview(trainer: L.Trainer, pl_module: L.LightningModule, path: Path, n: int = 6) -> bool:
    """Draw truth (green) and predictions above the operating point (red) on the first validation tiles."""
    import cv2
    import torch

    loader = trainer.datamodule.val_dataloader() if trainer.datamodule else None
    if loader is None:
        return False
    images, boxes, _, _ = next(iter(loader))
    images, boxes = images[:n], boxes[:n]
    with torch.no_grad():
        predictions = pl_module(images.to(pl_module.device))
    threshold = float(pl_module.operating_threshold)
    tiles = []
    for image, truth, (pb, ps, _) in zip(images, boxes, predictions):
        canvas = np.ascontiguousarray(image.permute(1, 2, 0).numpy()[..., ::-1])
        for b in truth.numpy():
            cv2.rectangle(canvas, (int(b[0]) - 2, int(b[1]) - 2), (int(b[2]) + 2, int(b[3]) + 2), (0, 220, 0), 1)
        for b, s in zip(pb.cpu().numpy(), ps.cpu().numpy()):
            if s >= threshold:
                cv2.rectangle(canvas, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (0, 0, 255), 1)
        tiles.append(canvas)
    cv2.imwrite(str(path), np.hstack(tiles))
    return True
