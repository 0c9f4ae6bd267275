"""The embedded backend against the real built models: the start-up check, batching, the delay from Settings."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from faceserve.backends import create
from faceserve.backends.onnx import OnnxRuntimeBackend, check_session
from faceserve.errors import BackendMismatch
from faceserve.models.repository import Repository, model_file
from faceserve.settings import Settings


@pytest.fixture(scope="module")
def models(repository) -> Repository:
    return Repository.load(repository)


def test_every_built_model_matches_its_spec(models):
    for name, spec in models.specs.items():
        check_session(spec, ort.InferenceSession(str(models.model_file(name)), providers=["CPUExecutionProvider"]))
    assert {"face_detector", "emotion"} <= set(models.specs)


def test_a_model_that_differs_from_its_spec_is_refused_with_every_difference(models):
    emotion = models.specs["emotion"]
    session = ort.InferenceSession(str(model_file(models.path / "emotion")), providers=["CPUExecutionProvider"])
    wrong = dataclasses.replace(emotion, input_name="pixels", height=48, output_dims=((8,),))
    with pytest.raises(BackendMismatch) as refused:
        check_session(wrong, session)
    message = str(refused.value)
    assert message.startswith("emotion: input input tensor(float) [") and message.count(";") == 1
    assert message.endswith(", 64, 64, 1] != pixels float [-1, 48, 64, 1]; output probabilities [7] != [8]")


def test_rows_are_answered_in_order_through_the_batcher_with_the_configured_delay(models):
    emotion = models.specs["emotion"]
    rows = np.random.default_rng(0).uniform(-1, 1, (3, *emotion.input_shape)).astype(np.float32)
    direct = ort.InferenceSession(str(models.model_file("emotion")), providers=["CPUExecutionProvider"])
    (expected,) = direct.run(["probabilities"], {"input": rows})

    async def run(backend: OnnxRuntimeBackend):
        await backend.start({"emotion": emotion})
        try:
            answers = await asyncio.gather(*(backend.infer(emotion, rows[i:i + 1]) for i in range(3)))
            delay = backend._batchers[emotion.name, emotion.version]._delay
            return answers, delay, backend.statistics(), await backend.ready()
        finally:
            await backend.close()

    answers, delay_s, statistics, ready = asyncio.run(run(OnnxRuntimeBackend(models.path, batch_delay_us=5000)))
    np.testing.assert_allclose(np.concatenate([a["probabilities"] for a in answers]), expected, atol=1e-6)
    assert delay_s == 0.005 and ready == {"emotion": True}
    assert statistics["emotion"]["rows"] == 3 and 1 <= statistics["emotion"]["executions"] <= 3
    _, own_delay_s, _, _ = asyncio.run(run(OnnxRuntimeBackend(models.path)))
    assert own_delay_s == emotion.queue_delay_us / 1e6 == 0.0  # the config's own


def test_an_empty_batch_is_answered_without_running_the_model(models):
    emotion = models.specs["emotion"]
    outputs = asyncio.run(OnnxRuntimeBackend(models.path).infer(emotion, np.zeros((0, 64, 64, 1), np.float32)))
    assert outputs["probabilities"].shape == (0, 7) and outputs["probabilities"].dtype == np.float32


def test_the_batch_delay_comes_from_settings_into_the_backend(monkeypatch, tmp_path):
    monkeypatch.setenv("FACESERVE_BATCH_DELAY_US", "1500")
    settings = Settings.from_env()
    assert settings.batch_delay_us == 1500
    backend = create("onnxruntime", tmp_path, batch_delay_us=settings.batch_delay_us)
    assert isinstance(backend, OnnxRuntimeBackend) and backend._batch_delay_us == 1500
    monkeypatch.setenv("FACESERVE_BATCH_DELAY_US", "")
    assert Settings.from_env().batch_delay_us is None
