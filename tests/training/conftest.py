"""Training tests: a tiny synthetic dataset made once, MLflow in a temporary SQLite store."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from ordnance.datasets.synth.writers import write_tile_dataset

    root = tmp_path_factory.mktemp("tiny-synth")
    return write_tile_dataset(root, n_train=8, n_valid=4, tile_px=256, seed=3, workers=1)


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fit(tiny_data, tmp_path):
    """Run ``ordnance train`` in-process on the tiny recipe; returns the LightningCLI object."""
    from ordnance.training.cli import main

    def run(*extra: str, subcommand: str = "fit"):
        args = [
            subcommand,
            "--config",
            str(REPO / "configs" / "tiny.yaml"),
            "--data.data_yaml",
            str(tiny_data),
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
            *extra,
        ]
        return main(args)

    return run


from conftest import REPO  # noqa: E402
