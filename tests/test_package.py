"""The package frame: the field runtime stays torch-free, nothing shadows PyPI names, the wheel installs
without the train extra, and the command group loads subcommands lazily."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
INFERENCE_MODULES = sorted(
    "ordnance.inference." + ".".join(p.relative_to(REPO / "inference").with_suffix("").parts)
    for p in (REPO / "inference").rglob("*.py")
    if p.name != "__init__.py"
)


def run_python(code: str, python: str = sys.executable, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd or REPO.parent, timeout=300)


@pytest.mark.parametrize("module", INFERENCE_MODULES)
def test_inference_module_never_imports_torch(module):
    result = run_python(f"import sys, {module}; print('torch' in sys.modules, 'lightning' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"], f"{module} pulls in torch or lightning"


def test_score_help_does_not_import_torch():
    code = (
        "import sys; from click.testing import CliRunner; from ordnance.inference.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['score', '--help']); assert r.exit_code == 0, r.output; "
        "print('torch' in sys.modules)"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_training_imports_no_gdal_stack_nor_mlflow():
    """Training on tiles needs neither GDAL (rasterio, pyogrio, pyproj) nor MLflow at import: a GPU machine with
    only the training libraries runs the recipes with a CSV logger (experiments/pfm1/gpu_fit.py)."""
    code = (
        "import sys; import ordnance.training.cli, ordnance.training.task, ordnance.datasets.datamodule; "
        "print(sorted(m for m in ('rasterio', 'pyogrio', 'pyproj', 'mlflow') if m in sys.modules))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_pypi_names_are_not_shadowed(tmp_path):
    for name in ("datasets", "inference", "models", "training"):
        result = run_python(
            f"import importlib.util as u; s = u.find_spec('{name}'); print(s and s.origin)", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert str(REPO) not in result.stdout, f"'import {name}' resolves to our folder: {result.stdout}"


def test_group_lists_subcommands_and_version():
    from ordnance.inference.cli.main import cli

    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"])
    assert listing.exit_code == 0
    for name in ("score", "evaluate", "synth", "train", "export"):
        assert name in listing.output
    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and "ordnance, version" in version.output


def test_wheel_installs_without_train_extra(tmp_path):
    """Build the wheel, install it (base dependencies only) into a fresh venv, score with it."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = next((tmp_path / "dist").glob("ordnance-*.whl"))
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    app = {f"ordnance/inference/tablet_app/{n}" for n in ("index.html", "app.js", "ordnance.js", "worker.js", "sw.js")}
    assert app <= names, sorted(app - names)  # the tablet app's files travel with the package
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True, env=env, timeout=900)
    result = run_python(
        "import importlib.util, sys, ordnance.inference.scoring, ordnance.inference.cli.main; "
        "print(importlib.util.find_spec('torch') is None, 'torch' in sys.modules)",
        python=python,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
    cli = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "ordnance"), "train", "fit"], capture_output=True, text=True, timeout=120
    )
    assert cli.returncode != 0 and "ordnance[train]" in cli.stderr
