"""convert: parity with the source framework, configs through model_config_pb2, refusal, idempotence."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

from convert import build, parity
from convert.export import SourceModel
from convert.parity import DEFAULT_RAW_TOLERANCE
from faceserve.models.repository import (CONFIG_FILE, GPU_CONFIG_FILE, GPU_QUEUE_DELAY_US, load_spec, model_dirs,
                                         read_config)
from faceserve.models.spec import SpecError
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
    assert parity["max_abs_diff"] <= 1e-4 and parity["raw_max_abs_diff"] <= DEFAULT_RAW_TOLERANCE
    assert parity["top1_agreement"] == 1.0 and not parity.get("non_finite")
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
        spec = load_spec(model_dir)
        assert list(cpu.input[0].dims) == list(spec.input_shape) and len(spec.input_shape) == 3  # no batch dim


def test_onnx_batch_dimension_is_dynamic(repository):
    for model_dir in model_dirs(repository):
        spec = load_spec(model_dir)
        session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"))
        single = parity.random_inputs(spec, 1, seed=1)[0]
        batch = np.concatenate([single] * 5)
        one = session.run(None, {spec.input_name: single})
        five = session.run(None, {spec.input_name: batch})
        for a, b in zip(one, five):
            assert b.shape[0] == 5
            np.testing.assert_allclose(b, np.repeat(a, 5, axis=0), atol=1e-5)


def test_labels_and_recipes_travel_with_the_models(repository, gender_age_built):
    emotion = load_spec(repository / "emotion")
    assert emotion.labels == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert (emotion.colour, emotion.input_shape) == ("gray", (64, 64, 1))
    age = load_spec(repository / "age")
    assert (age.colour, age.crop.margin, age.crop.stretch, age.units) == ("bgr", 0.4, True, "years")
    assert load_spec(repository / "gender").labels == ("female", "male")
    detector = load_spec(repository / "face_detector")
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
    spec = load_spec(tmp_path / "emotion_mini_xception_48")
    assert spec.input_shape == (48, 48, 1)
    record = json.loads((tmp_path / "emotion_mini_xception_48" / "1" / "build.json").read_text())
    assert record["parity"]["max_abs_diff"] <= 1e-4 and record["parity"]["top1_agreement"] == 1.0


# ---- the build's own checks, on small synthetic ONNX models (no TensorFlow) ----------------


def toy_graph(outputs: list[str], units: int, nodes: list[onnx.NodeProto],
              initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 8, 8, 3])],
        [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", units]) for name in outputs],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def toy_head(units: int, decoder: str, poison: float | None = None) -> onnx.ModelProto:
    """input [N, 8, 8, 3] -> flatten -> matmul -> softmax/sigmoid -> "probabilities" [N, units];
    `poison` is added to every output (NaN or inf in the ONNX model's answers). The sigmoid's bias
    keeps every probability under 0.5, so a NaN there still agrees on the decision."""
    weights = np.random.default_rng(units).normal(0, 0.05, (192, units)).astype(np.float32)
    inits = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.float32([-8.0]), "bias"),
             numpy_helper.from_array(np.float32([poison or 0.0]), "poison")]
    activation = "Softmax" if decoder == "softmax" else "Sigmoid"
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Add", ["logits", "bias"], ["shifted"]),
             helper.make_node(activation, ["shifted" if decoder == "sigmoid" else "logits"], ["clean"]),
             helper.make_node("Add", ["clean", "poison"], ["probabilities"])]
    return toy_graph(["probabilities"], units, nodes, inits)


def toy_blazeface() -> onnx.ModelProto:
    """regressors = 100 x (pixels in pixel units), classificators = 50 + 1000 |x| (logits far from 0)."""
    inits = [numpy_helper.from_array(np.float32([100.0]), "hundred"),
             numpy_helper.from_array(np.float32([1000.0]), "thousand"),
             numpy_helper.from_array(np.float32([50.0]), "fifty")]
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Mul", ["flat", "hundred"], ["regressors"]),
             helper.make_node("Abs", ["flat"], ["magnitude"]),
             helper.make_node("Mul", ["magnitude", "thousand"], ["scaled"]),
             helper.make_node("Add", ["scaled", "fifty"], ["classificators"])]
    return toy_graph(["regressors", "classificators"], 192, nodes, inits)


def onnx_runner(model: onnx.ModelProto, names: list[str]):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda batch: dict(zip(names, session.run(names, {"input": batch})))


def toy_entry(decoder: str, labels: list[str], task: str = "image_classifier") -> dict:
    outputs = ["regressors", "classificators"] if decoder == "blazeface" else ["probabilities"]
    return {"name": "toy", "task": task, "decoder": decoder, "source": {"path": "toy.onnx"}, "outputs": outputs,
            "labels": labels,
            "colour": "rgb", "scale": 1 / 127.5, "offset": -1.0, "letterbox": decoder == "blazeface"}


def build_toy(tmp_path: Path, entry: dict, model: onnx.ModelProto, run, **tolerances) -> build.BuildResult:
    source = SourceModel(run=run, onnx_model=model, input_shape=(8, 8, 3))
    options = {"tolerance": 1e-4, "raw_tolerance": DEFAULT_RAW_TOLERANCE, **tolerances}
    return build.build_from_source(entry, source, tmp_path / entry["name"], "digest", **options)


def test_a_faithful_toy_model_is_built_with_both_tolerances_recorded(tmp_path):
    model = toy_head(3, "softmax")
    result = build_toy(tmp_path, toy_entry("softmax", ["a", "b", "c"]), model, onnx_runner(model, ["probabilities"]))
    assert result.status == "built", result.detail
    record = json.loads((tmp_path / "toy" / "1" / "build.json").read_text())
    assert (record["tolerance"], record["raw_tolerance"]) == (1e-4, DEFAULT_RAW_TOLERANCE)
    assert record["parity"]["non_finite"] == [] and record["parity"]["top1_agreement"] == 1.0
    assert load_spec(tmp_path / "toy").labels == ("a", "b", "c")


def _poisoned(run, value: float):
    def poisoned(batch):
        outputs = {name: array.copy() for name, array in run(batch).items()}
        outputs["probabilities"][0, 0] = value
        return outputs
    return poisoned


@pytest.mark.parametrize("case,value,named", [
    ("source", np.nan, "source probabilities"),
    ("onnx", np.nan, "ONNX probabilities"),
    ("both", np.inf, "source probabilities, ONNX probabilities"),  # inf - inf is NaN: no diff to see
    ("source", -np.inf, "source probabilities"),
])
def test_nan_or_inf_in_an_output_refuses_the_build(tmp_path, case, value, named):
    clean = toy_head(1, "sigmoid")
    model = toy_head(1, "sigmoid", poison=value) if case in ("onnx", "both") else clean
    run = onnx_runner(model if case == "both" else clean, ["probabilities"])
    if case == "source":
        run = _poisoned(run, value)
    result = build_toy(tmp_path, toy_entry("sigmoid", ["no", "yes"]), model, run)
    assert result.status == "failed"
    assert f"NaN or inf in {named}" in result.detail, result.detail
    assert not (tmp_path / "toy" / "1" / "model.onnx").exists()


def test_blazeface_raw_tensors_are_gated_by_the_raw_tolerance(tmp_path):
    """Logits 5e-3 apart where sigmoid is flat: the consumed form agrees, the raw tensors do not."""
    model = toy_blazeface()
    names = ["regressors", "classificators"]
    onnx_run = onnx_runner(model, names)

    def source(batch):
        outputs = onnx_run(batch)
        return {"regressors": outputs["regressors"], "classificators": outputs["classificators"] + 5e-3}

    entry = toy_entry("blazeface", [], task="face_detector")
    refused = build_toy(tmp_path, entry, model, source)
    assert refused.status == "failed", refused.detail
    assert "raw tensors 5.0" in refused.detail and f"raw tolerance {DEFAULT_RAW_TOLERANCE:g}" in refused.detail
    assert not (tmp_path / "toy" / "1" / "model.onnx").exists()
    built = build_toy(tmp_path, entry, model, source, raw_tolerance=1e-2)
    assert built.status == "built", built.detail
    parity = json.loads((tmp_path / "toy" / "1" / "build.json").read_text())["parity"]
    assert parity["max_abs_diff"] < 1e-6 and 4e-3 < parity["raw_max_abs_diff"] < 6e-3


@pytest.mark.parametrize("decoder,units,labels", [
    ("softmax", 3, ["a", "b"]), ("softmax", 2, ["a", "b", "c"]), ("sigmoid", 1, ["yes"]),
    ("sigmoid", 1, ["a", "b", "c"]), ("sigmoid", 2, ["no", "yes"]),
])
def test_label_count_must_match_the_output_at_build_time(tmp_path, decoder, units, labels):
    model = toy_head(units, decoder)
    result = build_toy(tmp_path, toy_entry(decoder, labels), model, onnx_runner(model, ["probabilities"]))
    assert result.status == "failed"
    assert "toy" in result.detail and f"{len(labels)} label" in result.detail, result.detail
    assert not (tmp_path / "toy" / "1" / "model.onnx").exists()


def copy_model_folder(repository: Path, name: str, target: Path) -> Path:
    folder = target / name
    folder.mkdir()
    (folder / CONFIG_FILE).write_text((repository / name / CONFIG_FILE).read_text())
    return folder


def test_labels_file_without_a_final_newline_keeps_its_last_label(repository, tmp_path):
    folder = copy_model_folder(repository, "emotion", tmp_path)
    (folder / "labels.txt").write_text("angry\ndisgust\nfear\nhappy\nsad\nsurprise\nneutral")
    assert load_spec(folder).labels[-1] == "neutral"
    (folder / "labels.txt").write_text("angry\r\ndisgust\r\nfear\r\nhappy\r\nsad\r\nsurprise\r\nneutral\r\n\n\n")
    assert load_spec(folder).labels == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_label_count_must_match_the_output_at_load_time(repository, tmp_path):
    folder = copy_model_folder(repository, "emotion", tmp_path)
    (folder / "labels.txt").write_text("angry\ndisgust\nfear\nhappy\nsad\nsurprise\n")
    with pytest.raises(SpecError, match=r"emotion: 6 labels for 7 softmax outputs"):
        load_spec(folder)


def test_raw_tolerance_option_refuses_the_real_detector(tmp_path):
    """BlazeFace's raw tensors differ by ~6e-4 (float32 at logits of several hundred): above 1e-5."""
    result = run_convert("build", "--only", "face_detector", "--repository", str(tmp_path), "--raw-tolerance", "1e-5")
    assert result.returncode == 1, result.stderr
    assert "refusing to write face_detector" in result.stderr and "raw tolerance 1e-05" in result.stderr
    assert not (tmp_path / "face_detector" / "1" / "model.onnx").exists()
