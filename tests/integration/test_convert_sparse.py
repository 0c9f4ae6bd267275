"""convert on a TFLite model with sparse weights (BlazeFace full range): densified by TFLite's own kernel, then the
ONNX model answers what the sparse original answers."""

from __future__ import annotations

import subprocess
import tomllib

import numpy as np
import onnxruntime as ort
import pytest

from convert import artifacts, export
from tests.support import ROOT

ENTRY = next(e for e in tomllib.loads((ROOT / "convert" / "manifest.toml").read_text())["model"]
             if e["name"] == "blazeface_full")


def operators(path) -> set[str]:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.read_model(str(path))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return {names[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators}


@pytest.fixture(scope="module")
def sparse_model():
    try:
        return artifacts.resolve(ENTRY["source"], ENTRY["sha256"])
    except (artifacts.ArtifactUnavailable, subprocess.CalledProcessError, OSError) as exc:  # offline, nothing cached
        pytest.skip(f"the mediapipe wheel cannot be had here: {exc}")


def test_densify_ops_are_replaced_by_their_dense_constants(sparse_model, tmp_path):
    dense = export._densified(sparse_model, tmp_path / "dense.tflite")
    assert "DENSIFY" in operators(sparse_model) and "DENSIFY" not in operators(dense)
    assert operators(dense) == operators(sparse_model) - {"DENSIFY"}
    plain = tmp_path / "plain.tflite"
    assert export._densified(dense, plain) == dense and not plain.exists()  # a dense model is used as it is


def test_the_onnx_model_answers_what_the_sparse_original_answers(sparse_model):
    source = export.from_tflite(sparse_model, list(ENTRY["outputs"]))
    assert source.input_shape == (192, 192, 3)
    batch = np.random.default_rng(0).uniform(-1, 1, (3, 192, 192, 3)).astype(np.float32)
    session = ort.InferenceSession(source.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(ENTRY["outputs"], session.run(list(ENTRY["outputs"]), {"input": batch})))
    want = source.run(batch)
    assert got["regressors"].shape == (3, 2304, 16) and got["classificators"].shape == (3, 2304, 1)
    for name in ENTRY["outputs"]:  # raw logits and pixel regressors reach ~100: float32 rounding, not a wrong op
        assert np.abs(got[name] - want[name]).max() < 1e-3, name
