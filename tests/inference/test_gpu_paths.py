"""The GPU scoring paths, run where they can run without a GPU: several reader threads, IOBinding, the provider
options, and a GPU asked for where there is none (visible in the output and the manifest)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import gaussian_blobs
from ordnance.inference.cli.main import cli
from ordnance.inference.errors import InputError, ModelError
from ordnance.inference.scoring import ScoringJob, score
from ordnance.inference.session import engine_cache_dir, open_session, provider_options

NO_CUDA = "CUDAExecutionProvider" not in ort.get_available_providers()


@pytest.fixture
def survey(write_geotiff):
    rng = np.random.default_rng(11)
    centres = [(int(c), int(r)) for c, r in zip(rng.integers(10, 1190, 40), rng.integers(10, 890, 40))]
    return write_geotiff(gaussian_blobs(900, 1200, centres), name="survey.tif"), centres


def test_several_readers_give_the_one_reader_outputs(tmp_path, blob_model, survey):
    """Windows decoded by four threads, each a contiguous run of the grid, arrive in another order: the candidates
    and the review page's images are the same as with one reader."""
    mosaic, centres = survey
    model = blob_model(256)
    runs = {}
    for readers in (1, 4):
        job = ScoringJob(inputs=(str(mosaic),), model=model, out_dir=tmp_path / f"r{readers}", progress=False,
                         readers=readers)  # fmt: skip
        runs[readers] = score(job)
    one, four = runs[1], runs[4]
    assert four.manifest["settings"]["readers"] == 4 and one.manifest["settings"]["readers"] == 1
    assert len(one.candidates["id"]) == len(centres)
    for name in ("x", "y", "score", "class", "bbox_px"):
        np.testing.assert_array_equal(one.candidates[name], four.candidates[name], err_msg=name)
    with np.load(tmp_path / "r1" / "review_preview.npz") as a, np.load(tmp_path / "r4" / "review_preview.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_io_binding_returns_what_a_plain_run_returns(blob_model):
    model = blob_model(256, batch=2)
    plain = open_session(model, io_binding=False)
    bound = open_session(model, io_binding=True)
    assert not plain.io_binding and bound.io_binding
    images = np.zeros((2, 3, 256, 256), np.uint8)
    images[0, :, 100:110, 40:50] = 220  # one bright square in the first tile
    images[1, :, 20:26, 200:206] = 180
    for a, b in zip(plain.run(images), bound.run(images)):
        np.testing.assert_array_equal(a, b)
    boxes, scores, _ = bound.run(images)
    top = boxes[0, np.argmax(scores[0])]
    assert 35 <= (top[0] + top[2]) / 2 <= 55 and 95 <= (top[1] + top[3]) / 2 <= 115  # the square found


def test_provider_options(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    names = [name for name, _ in provider_options("tensorrt", fp16=True)]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = dict(provider_options("tensorrt", fp16=True))["TensorrtExecutionProvider"]
    assert trt["trt_fp16_enable"] is True and trt["trt_engine_cache_enable"] is True
    assert trt["trt_engine_cache_path"] == str(tmp_path / "ordnance" / "tensorrt") == str(engine_cache_dir())
    assert dict(provider_options("tensorrt"))["TensorrtExecutionProvider"]["trt_fp16_enable"] is False
    assert [name for name, _ in provider_options("cuda")] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.skipif(not NO_CUDA, reason="this machine has the CUDA provider: nothing falls back")
def test_a_gpu_asked_for_where_there_is_none_is_said_in_the_output_and_the_manifest(tmp_path, blob_model, survey):
    mosaic, centres = survey
    out = tmp_path / "out"
    argv = ["score", str(mosaic), "--model", str(blob_model(256)), "-o", str(out), "--device", "cuda",
            "--no-progress", "--no-review"]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert "--device cuda asked for CUDAExecutionProvider, not available here: ran on CPUExecutionProvider" in (
        result.stderr
    )
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["execution_provider"] == "CPUExecutionProvider" and settings["device_fallback"]
    assert settings["io_binding"] is False and settings["readers"] == 4  # a GPU's readers, asked for with it
    assert json.loads((out / "manifest.json").read_text())["candidates"] == len(centres)


def test_float16_is_refused_off_tensorrt(tmp_path, blob_model, survey):
    mosaic, _ = survey
    with pytest.raises(InputError, match="float16 runs through TensorRT"):
        score(ScoringJob(inputs=(str(mosaic),), model=blob_model(256), out_dir=tmp_path / "out", fp16=True))
    with pytest.raises(ModelError, match="float16 runs through TensorRT"):
        open_session(blob_model(256), device="cuda", fp16=True)
    assert not (tmp_path / "out").exists()
