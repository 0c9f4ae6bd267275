"""dlib's face ResNet read from dlib's own file and rebuilt as ONNX (convert/dlib.py), against dlib itself: dlib-bin
in the face_recognition peer (faceserve/dev/peers.py, its own environment) cuts its aligned chips of every real photo
here and computes its descriptors; the ONNX model must give the same 128 numbers on every chip."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from convert import build, dlib
from faceserve.dev import peers
from faceserve.models.repository import load_spec
from tests.support import ROOT

pytestmark = pytest.mark.slow

RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
TOLERANCE = 1e-4
ENTRY = next(e for e in tomllib.loads((ROOT / "convert" / "manifest.toml").read_text())["model"]
             if e["name"] == "embedding_dlib")


@pytest.fixture(scope="module")
def resnet_file():
    try:
        return peers.model_file(RESNET_FILE)
    except peers.PeerInstallError as exc:  # no PyPI here: nothing to compare with
        pytest.skip(f"the face_recognition peer (dlib) cannot be installed: {exc}")


@pytest.fixture(scope="module")
def dlib_chips(fixtures, resnet_file) -> dict[str, np.ndarray]:
    """dlib's own chips of every real photo of faces here, and dlib's descriptors of them."""
    chips = dlib.dlib_chips(dlib.parity_photos())
    return {**chips, "descriptors": dlib.dlib_descriptors(chips["chips"])}


def test_onnx_gives_dlibs_descriptor_on_every_real_chip(resnet_file, dlib_chips):
    model = dlib.face_recognition_onnx(resnet_file)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    chips, expected = dlib_chips["chips"], dlib_chips["descriptors"]
    # measured: 100 faces (the identity photos, the detection set, the astronaut, grace hopper, ...)
    assert len(chips) >= 60
    actual = np.concatenate([session.run(["descriptor"], {"input": chips[i:i + 8].astype(np.float32) / 256})[0]
                             for i in range(0, len(chips), 8)])  # batches of 8 and a last, smaller one
    assert actual.shape == expected.shape == (len(chips), 128)
    difference = np.abs(actual - expected).max(axis=1)
    cosine = (actual * expected).sum(axis=1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    print(f"{len(chips)} chips: max |ONNX - dlib| {difference.max():.2e}, least cosine {cosine.min():.8f}")
    assert difference.max() <= TOLERANCE and cosine.min() >= 0.99999
    # different faces give different descriptors: dlib's own same-person distance is 0.6
    distances = np.linalg.norm(expected[:, None] - expected[None], axis=-1)
    assert (distances[np.triu_indices(len(chips), 1)] > 0.05).mean() > 0.95


def test_convert_builds_embedding_dlib_with_its_parity_against_dlib(tmp_path, monkeypatch, dlib_chips):
    """`convert build --only embedding_dlib`'s work: the sdist fetched and checked, the model written with a dynamic
    batch, parity measured against dlib (its chips taken from the fixture above to save a minute) and recorded."""
    monkeypatch.setattr(dlib, "dlib_chips", lambda photos: {"chips": dlib_chips["chips"]})
    result = build.build_one(ENTRY, tmp_path, TOLERANCE, force=True)
    assert result.status == "built", result.detail
    record = json.loads(build.build_record(tmp_path / "embedding_dlib").read_text())
    parity = record["parity"]
    assert parity["samples"] == {"random": 16, "real": len(dlib_chips["chips"])}
    assert parity["max_abs_diff"] <= TOLERANCE and parity["raw_max_abs_diff"] <= TOLERANCE
    assert parity["top1_agreement"] == 1.0 and not parity["non_finite"]
    assert record["sha256"] == ENTRY["sha256"] and record["source"].startswith("pypi-sdist:face-recognition-models")
    spec = load_spec(tmp_path / "embedding_dlib")
    assert (spec.height, spec.width, spec.channels, spec.scale, spec.offset) == (150, 150, 3, 1 / 256, 0.0)
    assert spec.output_dims == ((128,),) and spec.task == "embedding"
    model = onnx.load(str(tmp_path / "embedding_dlib" / "1" / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
