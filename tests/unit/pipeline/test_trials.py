"""A candidate on trial in the pipeline, over a backend that answers each version with its own label: a shadow runs
the candidate in the same round as the serving version (on the very same batch when their recipes agree) and answers
with the serving one; a canary answers whole requests by their id's draw; a batch draws once; without a request id
no candidate runs; a swap loads a new candidate beside the serving version and lets go of the one no longer run."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from faceserve.backends import Backend
from faceserve.dev import photos
from faceserve.errors import VersionNotLoaded
from faceserve.models.repository import Repository, write_onnx_model_folder
from faceserve.models.rollout import CANARY, SHADOW, drawn, start_trial, stop_trial
from faceserve.models.versions import add_version
from faceserve.pipeline.pipeline import Pipeline
from tests.unit.models.test_versions import LABELS, emotion, record

SAYS = {"1": "happy", "2": "sad", "3": "angry"}  # what each version of emotion answers for every face


class VersionedBackend(Backend):
    """Answers every row of emotion version v with SAYS[v]; records each call (name, version, batch) and the
    versions loaded."""

    kind = "versioned"

    def __init__(self):
        self.calls: list[tuple[str, str, np.ndarray]] = []
        self.loaded: set[str] = set()

    async def start(self, specs) -> None:
        self.loaded |= {f"{s.name}:{s.version}" for s in specs.values()}

    async def load(self, specs) -> None:
        self.loaded |= set(specs)

    async def unload(self, specs) -> None:
        self.loaded -= {f"{s.name}:{s.version}" for s in specs}

    async def _infer(self, spec, batch):
        self.calls.append((spec.name, spec.version, batch))
        await asyncio.sleep(0)
        rows = np.zeros((len(batch), len(LABELS)), np.float32)
        rows[:, LABELS.index(SAYS[spec.version])] = 1.0
        return {spec.output_names[0]: rows}

    async def ready(self):
        return {"versioned": True}


@pytest.fixture
def repo(tmp_path):
    """emotion 1 (serving, 64x64), 2 (the same recipe), 3 (48x48)."""
    model_dir = tmp_path / "emotion"
    write_onnx_model_folder(model_dir, emotion(), b"v1")
    add_version(model_dir, emotion(), b"v2", record("v2"))
    add_version(model_dir, emotion(48), b"v3", record("v3"))
    return tmp_path


@pytest.fixture
def grid():
    image = photos.fixture("emotion_classification.jpg")
    if image is None:
        pytest.skip("the shared fixtures are absent")
    return image


def started(repo) -> tuple[Pipeline, VersionedBackend]:
    backend = VersionedBackend()
    pipeline = Pipeline(Repository.load(repo), backend)
    return pipeline, backend


async def analyze(pipeline: Pipeline, image, key: str | None):
    if key is None:
        return await pipeline.analyze(image, "haar")
    with pipeline.one_version(key):
        return await pipeline.analyze(image, "haar")


def test_a_shadow_answers_with_the_serving_version_and_compares_on_the_same_batch(repo, grid, run):
    start_trial(repo / "emotion", SHADOW, 2)
    pipeline, backend = started(repo)
    run(pipeline.start())
    assert backend.loaded == {"emotion:1", "emotion:2"}
    analysis = run(analyze(pipeline, grid, "a-request"))
    assert analysis.faces and {f.emotion.label for f in analysis.faces} == {"happy"}
    assert analysis.models["emotion"] == "emotion:1"
    (compared,) = analysis.comparisons
    assert (compared.mode, compared.serving.version, compared.candidate.version, compared.answered_by_candidate) == (
        SHADOW, "1", "2", False)
    assert [v["label"] for v in compared.candidate_values] == ["sad"] * len(analysis.faces)
    (one, two) = backend.calls
    assert (one[:2], two[:2]) == (("emotion", "1"), ("emotion", "2")) and one[2] is two[2]  # the same batch
    backend.calls.clear()
    plain = run(analyze(pipeline, grid, None))  # no request id (annotate, the CLI): the serving version alone
    assert plain.comparisons == [] and [c[:2] for c in backend.calls] == [("emotion", "1")]


def test_a_canary_answers_whole_requests_by_their_draw_and_a_batch_draws_once(repo, grid, run):
    start_trial(repo / "emotion", CANARY, 3, 0.5)
    pipeline, backend = started(repo)
    run(pipeline.start())
    keys = [f"request-{i}" for i in range(12)]
    for key in keys:
        analysis = run(analyze(pipeline, grid, key))
        chosen = "3" if drawn(key) < 0.5 else "1"
        assert analysis.models["emotion"] == f"emotion:{chosen}"
        assert {f.emotion.label for f in analysis.faces} == {SAYS[chosen]}
        (compared,) = analysis.comparisons
        assert compared.answered_by_candidate == (chosen == "3") and compared.candidate.version == "3"
    assert 0 < sum(drawn(k) < 0.5 for k in keys) < len(keys)
    batch_key = next(k for k in keys if drawn(k) < 0.5)

    async def one_batch():
        with pipeline.one_version(batch_key):
            return await asyncio.gather(*(pipeline.analyze(grid, "haar") for _ in range(3)))
    assert {a.models["emotion"] for a in run(one_batch())} == {"emotion:3"}
    shapes = {batch.shape[1:] for name, version, batch in backend.calls if version == "3"}
    assert shapes == {(48, 48, 1)}  # the candidate cut its own crops


def test_a_swap_loads_the_new_candidate_and_lets_go_of_the_old(repo, grid, run):
    start_trial(repo / "emotion", SHADOW, 2)
    pipeline, backend = started(repo)
    run(pipeline.start())
    start_trial(repo / "emotion", SHADOW, 3)
    assert run(pipeline.swap(Repository.load(repo))) == []  # no serving version changed
    assert backend.loaded == {"emotion:1", "emotion:3"}
    assert run(analyze(pipeline, grid, "k")).comparisons[0].candidate.version == "3"
    stop_trial(repo / "emotion")
    run(pipeline.swap(Repository.load(repo)))
    assert backend.loaded == {"emotion:1"} and pipeline.trials == {}
    assert run(analyze(pipeline, grid, "k")).comparisons == []
    assert run(pipeline.swap(Repository.load(repo))) == [] and backend.loaded == {"emotion:1"}  # nothing changed


def test_a_repository_whose_trial_cannot_run_is_refused_on_reload_with_nothing_changed(repo, run):
    pipeline, backend = started(repo)
    run(pipeline.start())
    start_trial(repo / "emotion", SHADOW, 2)
    (repo / "emotion" / "2" / "model.onnx").unlink()
    with pytest.raises(Exception) as refused:
        run(pipeline.swap(Repository.load(repo)))
    assert getattr(refused.value, "code", None) == "invalid_repository" and "has no version 2" in str(refused.value)
    assert pipeline.trials == {} and backend.loaded == {"emotion:1"}



def test_a_trial_that_cannot_run_at_start_leaves_the_serving_versions_serving(repo, grid, run):
    start_trial(repo / "emotion", SHADOW, 2)
    (repo / "emotion" / "2" / "model.onnx").unlink()
    pipeline, backend = started(repo)
    run(pipeline.start())
    assert pipeline.trials == {} and backend.loaded == {"emotion:1"}
    assert run(analyze(pipeline, grid, "k")).models["emotion"] == "emotion:1"


class ForgetfulTriton(VersionedBackend):
    """A Triton that holds only the versions in `held` (restarted: only the version policy's)."""

    def __init__(self, held: set[str]):
        super().__init__()
        self.held = held

    async def load(self, specs) -> None:
        missing = sorted(set(specs) - self.held)
        if missing:
            raise VersionNotLoaded(f"Triton does not hold {', '.join(missing)}")
        await super().load(specs)


def test_a_candidate_the_backend_does_not_hold_runs_no_trial_until_it_does(repo, grid, run):
    """At start and at a reload the serving versions serve without it; the reload after it is held runs it."""
    start_trial(repo / "emotion", SHADOW, 2)
    backend = ForgetfulTriton({"emotion:1"})
    pipeline = Pipeline(Repository.load(repo), backend)
    run(pipeline.start())
    assert pipeline.trials == {} and backend.loaded == {"emotion:1"}
    assert run(analyze(pipeline, grid, "k")).models["emotion"] == "emotion:1"
    start_trial(repo / "emotion", SHADOW, 3)
    assert run(pipeline.swap(Repository.load(repo))) == [] and pipeline.trials == {}
    backend.held.add("emotion:3")  # `convert shadow emotion 3 --triton-url` loaded it
    run(pipeline.swap(Repository.load(repo)))
    assert backend.loaded == {"emotion:1", "emotion:3"}
    assert run(analyze(pipeline, grid, "k")).comparisons[0].candidate.version == "3"
