"""A face head's new version served without a restart on the Triton backend, through Triton's repository API.

The local Triton runs under explicit model control; emotion's version 1 is mini_XCEPTION .102 (64x64), version 2 the
48x48 .119. `python -m convert promote emotion 2 --triton-url` has Triton load version 2 beside version 1, then
rewrites the config, which the service (two workers, each watching) follows; `rollback` the same way back. 16
clients ask all along: no request fails, and every answer's emotion scores are exactly those the embedded backend
gives for the version the answer names (a request mixing two versions would match neither, or fail on the other's
crop size). Neither Triton nor the service restarts. Triton's own pipeline model (BLS), asked all along too,
follows the configs the same way and calls the versions they name. A promotion killed after Triton loaded both
versions leaves the old one serving, before and after Triton's restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from faceserve.backends import triton_control
from faceserve.dev.triton_local import LocalTriton
from faceserve.feedback.comparisons import ComparisonReport, report
from faceserve.models import versions
from faceserve.pipeline.imaging import decode
from faceserve.services.resources import Resources
from faceserve.settings import Settings
from faceserve.store import open_store
from faceserve.triton_models import configs
from faceserve.triton_models.client import PipelineClient
from tests.integration.test_convert import run_convert
from tests.integration.test_model_trials import Offline, convert, follow, load, photo_set, settled_report
from tests.integration.test_model_versions import (CLIENTS, PROMOTE_THEN_HANG, V1, V2, analyze_through, check_answers,
                                                   fresh_copy, scores_by_face, versioned)
from tests.support import ROOT, free_port, jpeg, serve

pytestmark = pytest.mark.triton
__all__ = ["photo_set", "versioned"]  # the fixtures, shared with the embedded backend's tests


def fresh_answer(repo: Path, photo: np.ndarray, backend: str = "onnxruntime") -> dict:
    """The answer of a fresh process on the repository as it is, on the embedded backend (or `backend`)."""
    resources = Resources(dataclasses.replace(Settings.from_env(), backend=backend, repository=repo,
                                              models_watch_s=0))

    async def answer():
        try:
            await resources.start()
            return (await resources.pipeline.analyze(photo)).model_dump()
        finally:
            await resources.close()

    return asyncio.run(answer())


def expected_scores(versioned: Path, photo: np.ndarray, tmp_path: Path) -> dict[str, list[list[float]]]:
    """Each version's emotion scores on the photo, from the embedded backend."""
    expected = {}
    for version, ref in ((1, V1), (2, V2)):
        repo = shutil.copytree(versioned, tmp_path / f"expected{version}")
        if version == 2:
            versions.promote(repo / "emotion", 2)
        answer = fresh_answer(repo, photo)
        assert answer["models"]["emotion"] == ref
        expected[ref] = scores_by_face(answer)
    assert not np.allclose(expected[V1], expected[V2], atol=1e-3)  # the two versions are told apart by their scores
    return expected


PIPELINE_CLIENTS = 2


async def under_load(url: str, pipeline: PipelineClient, image: bytes, phases):
    """`analyze_through`'s load, and PIPELINE_CLIENTS asking Triton's pipeline model meanwhile; (statuses,
    (answer, asked, came), pipeline errors, (pipeline answer, asked, came), (phase began, phase ended))."""
    pipeline_errors, pipeline_answers = [], []

    async def through_pipeline(stop: asyncio.Event):
        while not stop.is_set():
            asked = time.monotonic()
            try:
                answer = await asyncio.to_thread(pipeline.analyze, image)
            except InferenceServerException as exc:
                pipeline_errors.append(str(exc))
            else:
                pipeline_answers.append((answer.analysis, asked, time.monotonic()))

    statuses, answers, marks = await analyze_through(
        url, image, phases, beside=lambda stop: [through_pipeline(stop) for _ in range(PIPELINE_CLIENTS)])
    return statuses, answers, pipeline_errors, pipeline_answers, marks


def versions_by_window(timed: list[tuple[dict, float, float]], marks) -> tuple[set, set, set]:
    """The versions answers named before the promotion, between the two phases, and after the rollback."""
    (promoting, promoted), (rolling_back, rolled_back) = marks
    return ({a["models"]["emotion"] for a, asked, came in timed if came < promoting},
            {a["models"]["emotion"] for a, asked, came in timed if asked >= promoted and came < rolling_back},
            {a["models"]["emotion"] for a, asked, came in timed if asked >= rolled_back})


def test_promote_and_rollback_through_tritons_repository_api_under_load(versioned, repository, emotion_grid,
                                                                        tmp_path):
    image = jpeg(emotion_grid)
    expected = expected_scores(versioned, decode(image), tmp_path)  # the pixels the service decodes
    repo = fresh_copy(versioned, tmp_path)
    shutil.copytree(repository / configs.PIPELINE, repo / configs.PIPELINE)
    with LocalTriton(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                     python_models=True, env={"FACESERVE_MODELS_WATCH_S": "0.5"}) as triton:
        triton_url, triton_pid = f"grpc://{triton.grpc_url}", triton.pid
        pipeline = PipelineClient(triton_url)
        assert triton_control.loaded_versions(triton_url, "emotion") == [1]  # the policy's version only
        env = {"FACESERVE_MODEL_REPOSITORY": str(repo), "FACESERVE_BACKEND": triton_url,
               "FACESERVE_MODELS_WATCH_S": "0.5"}
        with serve(env) as url:
            async def promote(client):
                done = await asyncio.to_thread(run_convert, "promote", "emotion", "2", "--repository", str(repo),
                                               "--triton-url", triton_url)
                assert done.returncode == 0, done.stderr
                assert f"emotion: Triton at {triton_url} holds versions 1, 2 (" in done.stderr

            async def rollback(client):
                done = await asyncio.to_thread(run_convert, "rollback", "emotion", "--repository", str(repo),
                                               "--triton-url", triton_url)
                assert done.returncode == 0, done.stderr
                reloaded = await client.post(f"{url}/models/reload")
                assert reloaded.status_code == 200, reloaded.text
                assert "emotion:1" in reloaded.json()["serving"]

            statuses, timed, pipeline_errors, pipeline_timed, marks = asyncio.run(
                under_load(url, pipeline, image, [promote, rollback]))
            held = triton_control.loaded_versions(triton_url, "emotion")
            loads = triton.log_path.read_text().count('"loading: emotion:2"')

            # A version Triton does not hold is refused by the service, which keeps serving what it served.
            assert triton_control.load_beside(triton_url, repo / "emotion", 1) == [1]  # Triton lets 2 go
            assert run_convert("promote", "emotion", "2", "--repository", str(repo)).returncode == 0
            refused = httpx.post(f"{url}/models/reload", timeout=30)
            still = httpx.post(f"{url}/analyze", files={"image": ("g.jpg", image, "image/jpeg")}, timeout=30)
        assert triton.pid == triton_pid and triton.running  # never restarted

    assert set(statuses) == {200}, f"{len([s for s in statuses if s != 200])} failed of {len(statuses)}"
    counts = check_answers([answer for answer, _, _ in timed], expected)
    assert counts[V1] > CLIENTS and counts[V2] > CLIENTS, counts
    assert versions_by_window(timed, marks) == ({V1}, {V2}, {V1})
    assert pipeline_errors == []
    pipeline_counts = check_answers([answer for answer, _, _ in pipeline_timed], expected)
    assert pipeline_counts[V1] > PIPELINE_CLIENTS and pipeline_counts[V2] > PIPELINE_CLIENTS, pipeline_counts
    assert versions_by_window(pipeline_timed, marks) == ({V1}, {V2}, {V1})
    print(f"service: {len(statuses)} requests, {counts}; pipeline model: {len(pipeline_timed)} requests, "
          f"{pipeline_counts}")
    assert held == [1, 2]  # the version served before stays loaded: a rollback finds it there ...
    assert loads == 1  # ... and reloads nothing
    assert refused.status_code == 409 and refused.json()["error"] == "version_not_loaded", refused.text
    assert "Triton does not hold emotion:2" in refused.json()["message"]
    assert still.status_code == 200 and still.json()["models"]["emotion"] == V1


def test_a_triton_refusal_writes_nothing(versioned, tmp_path):
    """A promotion Triton cannot serve (unreachable here) leaves the config as it was."""
    repo = fresh_copy(versioned, tmp_path)
    before = (repo / "emotion" / "config.pbtxt").read_bytes()
    done = run_convert("promote", "emotion", "2", "--repository", str(repo), "--triton-url",
                       f"grpc://127.0.0.1:{free_port()}")
    assert done.returncode == 2 and "refusing: Triton at grpc://127.0.0.1:" in done.stderr, done.stderr
    assert (repo / "emotion" / "config.pbtxt").read_bytes() == before


CONVERT_THEN_HANG = PROMOTE_THEN_HANG.replace(
    "versions.promote(Path(sys.argv[1]), int(sys.argv[2]))",
    "from convert.__main__ import main\n"
    "main(['promote', 'emotion', sys.argv[2], '--repository', str(Path(sys.argv[1]).parent), '--triton-url', "
    "sys.argv[4]])")


def test_kill_9_after_triton_loaded_both_versions_leaves_the_old_one_serving(versioned, emotion_grid, tmp_path):
    """`convert promote --triton-url` killed once Triton holds both versions, before the config names the new one:
    the service goes on with the old version, a restarted Triton loads only it, and the promotion run again
    completes."""
    repo = fresh_copy(versioned, tmp_path)
    with LocalTriton(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as triton:
        url = f"grpc://{triton.grpc_url}"
        promoting = subprocess.Popen([sys.executable, "-c", CONVERT_THEN_HANG, str(repo / "emotion"), "2",
                                      "gpu.pbtxt", url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            for line in promoting.stdout:
                if line.strip() == "wrote gpu.pbtxt":
                    break
            os.kill(promoting.pid, signal.SIGKILL)
        finally:
            promoting.wait(timeout=30)
        assert promoting.returncode == -signal.SIGKILL
        assert triton_control.loaded_versions(url, "emotion") == [1, 2]
        assert fresh_answer(repo, emotion_grid, backend=url)["models"]["emotion"] == V1

        triton.stop()
        triton.start()  # as after a crash of the machine: Triton loads what the config names
        assert triton_control.loaded_versions(url, "emotion") == [1]
        assert fresh_answer(repo, emotion_grid, backend=url)["models"]["emotion"] == V1

        done = run_convert("promote", "emotion", "2", "--repository", str(repo), "--triton-url", url)
        assert done.returncode == 0, done.stderr
        assert triton_control.loaded_versions(url, "emotion") == [1, 2]
        assert fresh_answer(repo, emotion_grid, backend=url)["models"]["emotion"] == V2


def test_shadow_on_triton_under_load_reported_and_checked_offline(versioned, photo_set, tmp_path):
    """`convert shadow emotion 2 --triton-url`: Triton loads version 2 beside version 1 (a Triton that cannot be
    reached: refused, nothing written), then the trial is written; the service (two workers) follows and runs the
    candidate through Triton pinned to version 2 on the faces version 1 answers. 16 clients: no request fails, every
    answer is version 1's, the report's agreement is the offline one (both versions in-process on the same crops),
    and Triton counts exactly those faces on version 2. `candidate-stop` ends it; neither Triton nor the service
    restarts."""
    repo = fresh_copy(versioned, tmp_path)
    offline = Offline(repo)
    with LocalTriton(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as triton:
        triton_url, triton_pid = f"grpc://{triton.grpc_url}", triton.pid
        env = {"FACESERVE_MODEL_REPOSITORY": str(repo), "FACESERVE_BACKEND": triton_url,
               "FACESERVE_MODELS_WATCH_S": "0.5", "FACESERVE_DATA_DIR": str(tmp_path / "data")}
        with serve(env) as url:
            config = (repo / "emotion" / "config.pbtxt").read_bytes()
            refused = convert(repo, "shadow", "emotion", "2", "--triton-url", f"grpc://127.0.0.1:{free_port()}")
            assert refused.returncode == 2 and "refusing: Triton at grpc://127.0.0.1:" in refused.stderr, \
                refused.stderr
            assert (repo / "emotion" / "config.pbtxt").read_bytes() == config
            assert triton_control.loaded_versions(triton_url, "emotion") == [1]

            started = convert(repo, "shadow", "emotion", "2", "--triton-url", triton_url)
            assert started.returncode == 0, started.stderr
            assert f"emotion: Triton at {triton_url} holds versions 1, 2 (" in started.stderr
            assert follow(url)["trials"] == [{"model": "emotion", "mode": "shadow", "candidate": "emotion:2"}]
            statuses, shadowed, rate = asyncio.run(load(url, photo_set, rounds=1))
            assert set(statuses) == {200}, f"{sum(s != 200 for s in statuses)} failed of {len(statuses)}"
            assert {answer["models"]["emotion"] for _, answer in shadowed} == {"emotion:1"}
            agreeing, faces = offline.shadow_agreement(photo_set, shadowed)
            report = settled_report(url, {"shadow": faces})
            (pair,) = report["pairs"]
            assert (pair["serving"], pair["candidate"], pair["mode"], pair["faces"]) == (
                "emotion:1", "emotion:2", "shadow", faces)
            assert pair["agreement"] == pytest.approx(agreeing / faces, abs=1e-12)  # the offline figure, exactly
            assert set(pair["latency"]) == {"emotion:1", "emotion:2"}
            assert inferred(triton_url, "emotion", "2") == faces  # the candidate ran in Triton, on every face

            assert convert(repo, "candidate-stop", "emotion").returncode == 0
            assert follow(url)["trials"] == []
            statuses, stopped, _ = asyncio.run(load(url, {"emotion_grid": photo_set["emotion_grid"]}, rounds=1))
            assert set(statuses) == {200} and {a["models"]["emotion"] for _, a in stopped} == {"emotion:1"}
            time.sleep(1.0)  # the writers' windows
            assert settled_report(url, {"shadow": faces}, timeout_s=2)["pairs"][0]["faces"] == faces
            assert inferred(triton_url, "emotion", "2") == faces  # nothing ran on it after the trial
        assert triton.pid == triton_pid and triton.running  # never restarted
    print(f"\nTriton shadow at c={CLIENTS}, this loaded machine: {rate:.1f} req/s; agreement {agreeing}/{faces}; "
          f"latency (ms, mean/p95): " + "; ".join(f"{ref} {v['mean_ms']}/{v['p95_ms']}"
                                                 for ref, v in pair["latency"].items()))


def inferred(url: str, name: str, version: str) -> int:
    """How many inputs (batch rows) Triton ran on this version of the model."""
    import tritonclient.grpc as grpc_client

    client = grpc_client.InferenceServerClient(url.removeprefix("grpc://"))
    try:
        (stats,) = client.get_inference_statistics(name, version, as_json=True)["model_stats"]
    finally:
        client.close()
    return int(stats.get("inference_count", 0))


PIPELINE_TRIAL_CLIENTS = 4


def pipeline_load(pipeline: PipelineClient, photo_bytes: dict[str, bytes]) -> tuple[list, list[str]]:
    """PIPELINE_TRIAL_CLIENTS clients straight to Triton's pipeline model, each sending every photo once: the
    answers (photo name, answer) and the errors."""
    answers, errors = [], []

    async def one(offset: int):
        names = list(photo_bytes)
        for i in range(len(names)):
            name = names[(i + offset) % len(names)]
            try:
                answers.append((name, await asyncio.to_thread(pipeline.analyze, photo_bytes[name])))
            except InferenceServerException as exc:
                errors.append(str(exc))

    async def clients():
        await asyncio.gather(*(one(offset) for offset in range(PIPELINE_TRIAL_CLIENTS)))

    asyncio.run(clients())
    return answers, errors


def stored_report(store_url: str, faces: int, timeout_s: float = 20.0) -> ComparisonReport:
    """emotion's comparison report from the store, once its pairs count `faces` (the pipeline's writer wrote)."""
    store = open_store(store_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            found = report(store, "emotion", "emotion", True, None)
            if sum(pair.faces for pair in found.pairs) == faces or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
    finally:
        store.close()


def test_shadow_through_tritons_pipeline_model_reported_and_checked_offline(versioned, repository, photo_set,
                                                                           tmp_path):
    """`convert shadow emotion 2 --triton-url` seen by Triton's own pipeline model (BLS), which follows the configs:
    each request runs the candidate pinned to version 2 on the faces version 1 answers, and is remembered with its
    comparison rows in the store (FACESERVE_STORE) under the `request_id` output. Several clients straight to Triton:
    no error, every answer version 1's, and the store's report (what `/models/compare` reads) has the offline
    agreement on the same crops; Triton counts exactly those faces on version 2. Before the trial nothing is
    remembered."""
    repo = fresh_copy(versioned, tmp_path)
    shutil.copytree(repository / configs.PIPELINE, repo / configs.PIPELINE)
    offline = Offline(repo)
    store_url = f"sqlite:///{tmp_path / 'faceserve.db'}"
    with LocalTriton(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                     python_models=True,
                     env={"FACESERVE_MODELS_WATCH_S": "0.5", "FACESERVE_STORE": store_url}) as triton:
        triton_url = f"grpc://{triton.grpc_url}"
        pipeline = PipelineClient(triton_url)
        try:
            untried = pipeline.analyze(photo_set["emotion_grid"])
            started = convert(repo, "shadow", "emotion", "2", "--triton-url", triton_url)
            assert started.returncode == 0, started.stderr
            time.sleep(1.0)  # past the pipeline model's look at the configs (every 0.5 s, before an execution)
            shadowed, errors = pipeline_load(pipeline, photo_set)
            candidate_rows = inferred(triton_url, "emotion", "2")
        finally:
            pipeline.close()

    assert untried.tensors["request_id"].tolist() == [b""] and untried.analysis["request_id"] is None
    assert errors == [] and len(shadowed) == PIPELINE_TRIAL_CLIENTS * len(photo_set)
    assert {answer.analysis["models"]["emotion"] for _, answer in shadowed} == {"emotion:1"}
    request_ids = [answer.tensors["request_id"][0].decode() for _, answer in shadowed]
    assert all(request_ids) and len(set(request_ids)) == len(shadowed)
    assert request_ids == [answer.analysis["request_id"] for _, answer in shadowed]
    agreeing, faces = offline.shadow_agreement(photo_set, [(name, answer.analysis) for name, answer in shadowed])
    with_faces = sum(bool(answer.analysis["faces"]) for _, answer in shadowed)
    (pair,) = stored_report(store_url, faces).pairs
    assert (pair.serving, pair.candidate, pair.mode, pair.requests, pair.faces) == (
        "emotion:1", "emotion:2", "shadow", with_faces, faces)
    assert pair.agreement == pytest.approx(agreeing / faces, abs=1e-12)  # the offline figure, exactly
    assert candidate_rows == faces  # the candidate ran in Triton through BLS, on every face
    print(f"\npipeline model shadow, c={PIPELINE_TRIAL_CLIENTS}: {len(shadowed)} requests, agreement "
          f"{agreeing}/{faces}")
