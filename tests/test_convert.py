"""convert: parity with the source framework, configs through model_config_pb2, refusal, idempotence."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from faceserve.spec import CONFIG_FILE, GPU_CONFIG_FILE, GPU_QUEUE_DELAY_US, ModelSpec, model_dirs, read_config
from tests.support import ROOT

MANIFEST = tomllib.loads((ROOT / "convert" / "manifest.toml").read_text())
DEFAULTS = [e["name"] for e in MANIFEST["model"] if e.get("default")]


def run_convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convert", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


@pytest.mark.parametrize("name", DEFAULTS)
def test_default_model_parity_recorded(repository, name, request):
    model_dir = repository / name
    if not (model_dir / "1" / "model.onnx").exists():
        request.getfixturevalue("fixtures")  # skips when the fixtures are absent
        pytest.fail(f"{name} was not built although its artifact is available")
    record = json.loads((model_dir / "1" / "build.json").read_text())
    parity = record["parity"]
    assert parity["max_abs_diff"] <= 1e-4
    assert parity["top1_agreement"] == 1.0
    assert record["sha256"] == next(e["sha256"] for e in MANIFEST["model"] if e["name"] == name)
    if parity["samples"]["real"] < 4:  # without ../shared only astronaut and grace_hopper give face crops
        request.getfixturevalue("fixtures")  # skips when the fixtures are absent
    assert parity["samples"]["real"] >= 4, "parity must include real inputs (face crops or photos)"


def test_configs_use_dynamic_batching_and_omit_batch_dim(repository):
    for model_dir in model_dirs(repository):
        cpu = read_config(model_dir / CONFIG_FILE)
        gpu = read_config(model_dir / GPU_CONFIG_FILE)
        assert cpu.platform == gpu.platform == "onnxruntime_onnx"
        assert cpu.max_batch_size >= 16
        # CPU: batches stop at 8 rows and wait for nobody; GPU: batches may grow for 2 ms
        assert cpu.WhichOneof("scheduling_choice") == gpu.WhichOneof("scheduling_choice") == "dynamic_batching"
        assert list(cpu.dynamic_batching.preferred_batch_size) == [8]
        assert cpu.dynamic_batching.max_queue_delay_microseconds == 0
        assert list(gpu.dynamic_batching.preferred_batch_size) == []
        assert gpu.dynamic_batching.max_queue_delay_microseconds == GPU_QUEUE_DELAY_US == 2000
        assert [g.kind for g in cpu.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        spec = ModelSpec.load(model_dir)
        assert list(cpu.input[0].dims) == list(spec.input_shape)  # no leading batch dim
        assert -1 not in cpu.input[0].dims


def test_onnx_batch_dimension_is_dynamic(repository):
    for model_dir in model_dirs(repository):
        spec = ModelSpec.load(model_dir)
        session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"))
        single = np.random.default_rng(1).uniform(-1, 1, (1, *spec.input_shape)).astype(np.float32)
        batch = np.concatenate([single] * 5)
        one = session.run(None, {spec.input_name: single})
        five = session.run(None, {spec.input_name: batch})
        for a, b in zip(one, five):
            assert b.shape[0] == 5
            np.testing.assert_allclose(b, np.repeat(a, 5, axis=0), atol=1e-5)


def test_labels_and_recipes_travel_with_the_models(repository, gender_age_built):
    emotion = ModelSpec.load(repository / "emotion")
    assert emotion.labels == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert (emotion.colour, emotion.input_shape) == ("gray", (64, 64, 1))
    age = ModelSpec.load(repository / "age")
    assert (age.colour, age.crop.margin, age.crop.stretch, age.units) == ("bgr", 0.4, True, "years")
    assert ModelSpec.load(repository / "gender").labels == ("female", "male")
    detector = ModelSpec.load(repository / "face_detector")
    assert detector.letterbox and detector.input_shape == (128, 128, 3) and detector.score_threshold == 0.7


def test_rebuild_is_idempotent(repository):
    result = run_convert("build")
    assert result.returncode == 0, result.stderr
    for name in ("face_detector", "emotion"):
        assert any(line.split()[:3] == [name, "up", "to"] for line in result.stderr.splitlines()), result.stderr


def test_refuses_to_write_a_model_above_tolerance(tmp_path):
    result = run_convert("build", "--only", "emotion", "--repository", str(tmp_path), "--tolerance", "1e-12")
    assert result.returncode == 1
    assert "refusing to write emotion" in result.stderr
    assert not (tmp_path / "emotion" / "1" / "model.onnx").exists()


def test_keras_48px_model_converts_with_its_own_size(tmp_path, fixtures):
    result = run_convert("build", "--only", "emotion_mini_xception_48", "--repository", str(tmp_path))
    assert result.returncode == 0, result.stderr
    spec = ModelSpec.load(tmp_path / "emotion_mini_xception_48")
    assert spec.input_shape == (48, 48, 1)
    record = json.loads((tmp_path / "emotion_mini_xception_48" / "1" / "build.json").read_text())
    assert record["parity"]["max_abs_diff"] <= 1e-4 and record["parity"]["top1_agreement"] == 1.0
