"""dlib's face ResNet read from dlib's own file and rebuilt as ONNX (convert/dlib.py), against dlib itself: dlib-bin
in the face_recognition peer (faceserve/dev/peers.py, its own environment) cuts its aligned chips of every real photo
here and computes its descriptors; the ONNX model must give the same 128 numbers on every chip."""

from __future__ import annotations

import asyncio
import itertools
import json
import tomllib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from benchmarks.similarity import labelled_faces
from convert import build, dlib
from faceserve.dev import peers
from faceserve.services import Services
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


@pytest.fixture(scope="module")
def built(tmp_path_factory, dlib_chips):
    """`convert build --only embedding_dlib`'s work into a repository of its own: the sdist fetched and checked, the
    model written, parity measured against dlib (its chips taken from the fixture above to save a minute)."""
    folder = tmp_path_factory.mktemp("dlib-repository")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dlib, "dlib_chips", lambda photos: {"chips": dlib_chips["chips"]})
        result = build.build_one(ENTRY, folder, TOLERANCE, force=True)
    assert result.status == "built", result.detail
    return folder


def test_convert_builds_embedding_dlib_with_its_parity_against_dlib(built, dlib_chips):
    record = json.loads(build.build_record(built / "embedding_dlib").read_text())
    parity = record["parity"]
    assert parity["samples"] == {"random": 16, "real": len(dlib_chips["chips"])}
    assert parity["max_abs_diff"] <= TOLERANCE and parity["raw_max_abs_diff"] <= TOLERANCE
    assert parity["top1_agreement"] == 1.0 and not parity["non_finite"]
    assert record["sha256"] == ENTRY["sha256"] and record["source"].startswith("pypi-sdist:face-recognition-models")
    spec = load_spec(built / "embedding_dlib")
    assert (spec.height, spec.width, spec.channels, spec.scale, spec.offset) == (150, 150, 3, 1 / 256, 0.0)
    assert (spec.crop.align, spec.crop.template, spec.crop.margin) == (True, "dlib", 0.25)
    assert spec.output_dims == ((128,),) and spec.task == "embedding" and spec.score_threshold == 0.935
    model = onnx.load(str(built / "embedding_dlib" / "1" / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_served_with_our_alignment_it_sees_dlibs_chip_and_tells_the_identity_set_apart(built, repository):
    """The service's own detector and landmarks, embedding_dlib its embedding model: each identity photo's face cut
    by our alignment gets nearly dlib's descriptor of dlib's own chip (measured: cosine 0.9898 at least, 0.9948 on
    average), and every pair of the set (12 same-person, 79 different-people) falls on its side of the threshold."""
    for name in ("face_detector", "faceboxes", "face_landmarks"):
        (built / name).symlink_to((repository / name).resolve())
    faces = labelled_faces()

    async def embedded() -> np.ndarray:
        services = Services.build(repository=built)
        await services.resources.start()
        try:
            pipeline = services.resources.pipeline
            assert pipeline.require_embedding().spec.name == "embedding_dlib"
            rows = []
            for _, _, image in faces:
                largest = max(await pipeline.locate(image), key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                rows.append((await pipeline.embed(image, [largest]))[0])
            return np.stack(rows)
        finally:
            await services.close()

    ours = asyncio.run(embedded())
    found = dlib.dlib_chips([image for _, _, image in faces])
    widest = [max(np.flatnonzero(found["images"] == i), key=lambda k: np.ptp(found["points"][k][:, 0]))
              for i in range(len(faces))]
    dlibs = dlib.dlib_descriptors(found["chips"][widest])
    agreement = (ours * dlibs).sum(axis=1) / np.linalg.norm(dlibs, axis=1)
    assert agreement.min() >= 0.985, agreement.round(4)
    people = [person for person, _, _ in faces]
    threshold = load_spec(built / "embedding_dlib").score_threshold
    decisions = [(people[i] == people[j], float(ours[i] @ ours[j]) >= threshold)
                 for i, j in itertools.combinations(range(len(faces)), 2)]
    assert len(decisions) == 91 and sum(same for same, _ in decisions) == 12
    assert all(same == accepted for same, accepted in decisions)
