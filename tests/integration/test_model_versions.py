"""A face head's new version served without a restart under load, and a promotion killed half-way.

mini_XCEPTION .102 (64x64, the built emotion model) is version 1, the 48x48 .119 version 2, promoted and rolled
back with `python -m convert` while 16 clients keep asking. No request fails, and every answer's emotion scores are
exactly those of the one version its `models` names (a request mixing two versions would match neither, or fail on
the other's crop size)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from faceserve.errors import RestartRequired
from faceserve.models import versions
from faceserve.models.repository import CONFIG_FILE, GPU_CONFIG_FILE, load_spec, model_config, read_config, write_config
from faceserve.services.resources import Resources
from faceserve.settings import Settings
from tests.integration.test_convert import run_convert
from tests.integration.test_convert_model import EMOTION_FLAGS, ENTRIES
from tests.support import ROOT, jpeg, serve

CLIENTS = 16
V1, V2 = "emotion:1", "emotion:2"


@pytest.fixture(scope="module")
def versioned(repository, fixtures, tmp_path_factory) -> Path:
    """face_detector and emotion as built, and the 48x48 fer2013 model converted as emotion's version 2."""
    repo = tmp_path_factory.mktemp("versions") / "repo"
    for name in ("face_detector", "emotion"):
        shutil.copytree(repository / name, repo / name)
    result = run_convert("model", str(fixtures / "models" / "fer2013_mini_XCEPTION.119-0.65.hdf5"), "--name",
                         "emotion", "--labels", ",".join(ENTRIES["emotion"]["labels"]), *EMOTION_FLAGS,
                         "--repository", str(repo))
    assert result.returncode == 0, result.stderr
    return repo


async def analyze_through(url: str, image: bytes, phases, beside=lambda stop: []):
    """CLIENTS clients posting `image` to /analyze (and the coroutines `beside(stop)` gives) while each phase runs:
    (statuses, (answer, when asked, when it came), (phase began, phase ended)). Each phase gets 2 s of load before
    it and 1.5 s after it, in which both workers' watchers (every 0.5 s) have looked."""
    statuses, answers, marks = [], [], []
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=60) as client:
        async def one():
            while not stop.is_set():
                asked = time.monotonic()
                response = await client.post(f"{url}/analyze", files={"image": ("g.jpg", image, "image/jpeg")})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answers.append((response.json(), asked, time.monotonic()))
        clients = [asyncio.create_task(one()) for _ in range(CLIENTS)] + [asyncio.create_task(c) for c in beside(stop)]
        for phase in phases:
            await asyncio.sleep(2.0)
            began = time.monotonic()
            await phase(client)
            await asyncio.sleep(1.5)
            marks.append((began, time.monotonic()))
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*clients)
    return statuses, answers, marks


def fresh_copy(versioned: Path, tmp_path: Path) -> Path:
    shutil.copytree(versioned, tmp_path / "repo")
    return tmp_path / "repo"


def scores_by_face(analysis: dict) -> list[list[float]]:
    """Each face's emotion scores, faces in box order."""
    faces = sorted(analysis["faces"], key=lambda f: (f["box"]["x1"], f["box"]["y1"]))
    return [[face["emotion"]["scores"][label] for label in ENTRIES["emotion"]["labels"]] for face in faces]


def check_answers(answers: list[dict], expected: dict[str, list[list[float]]]) -> dict[str, int]:
    """Every answer is exactly one version's: its named version's scores on every face. Counts by version."""
    counts: dict[str, int] = {}
    for answer in answers:
        named = answer["models"]["emotion"]
        assert named in expected, named
        assert np.allclose(scores_by_face(answer), expected[named], atol=1e-4), f"an answer mixes versions: {named}"
        counts[named] = counts.get(named, 0) + 1
    return counts


def test_swap_in_process_under_load_and_refusal_of_other_changes(versioned, emotion_grid, tmp_path):
    repo = fresh_copy(versioned, tmp_path)
    resources = Resources(dataclasses.replace(Settings.from_env(), repository=repo, models_watch_s=0))
    pipeline = resources.pipeline

    async def scenario():
        try:
            return await swaps()
        finally:
            await resources.close()

    async def swaps():
        await resources.start()
        expected = {V1: scores_by_face((await pipeline.analyze(emotion_grid)).model_dump())}
        answers, stop = [], asyncio.Event()

        async def client():
            while not stop.is_set():
                answers.append((await pipeline.analyze(emotion_grid)).model_dump())

        clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(versions.promote, repo / "emotion", 2)
        swapped = await resources.reload()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(versions.rollback, repo / "emotion")
        back = await resources.reload()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*clients)  # any failed request raises here
        await asyncio.to_thread(versions.promote, repo / "emotion", 2)
        await resources.reload()
        expected[V2] = scores_by_face((await pipeline.analyze(emotion_grid)).model_dump())
        detector = load_spec(repo / "face_detector")
        write_config(model_config(dataclasses.replace(detector, score_threshold=0.6)),
                     repo / "face_detector" / CONFIG_FILE)
        with pytest.raises(RestartRequired, match="changed in face_detector, which only a restart serves"):
            await resources.reload()
        assert pipeline.repository.specs["face_detector"] == detector  # refused: nothing changed
        assert pipeline.repository.specs["emotion"].version == "2"
        return answers, expected, swapped, back

    answers, expected, swapped, back = asyncio.run(scenario())
    assert [(o.version, n.version, n.input_shape) for o, n in swapped] == [("1", "2", (48, 48, 1))]
    assert [(o.version, n.version) for o, n in back] == [("2", "1")]
    assert not np.allclose(expected[V1], expected[V2], atol=1e-3)  # the two versions are told apart by their scores
    counts = check_answers(answers, expected)
    assert counts[V1] > CLIENTS and counts[V2] > CLIENTS, counts
    assert answers[-1]["models"]["emotion"] == V1  # served again after the rollback


def test_promote_and_rollback_under_http_load_with_two_workers(versioned, emotion_grid, tmp_path):
    """The real server (two worker processes, each watching the configs): `convert promote` then `convert
    rollback` with POST /models/reload, 16 clients all along."""
    repo = fresh_copy(versioned, tmp_path)
    image = jpeg(emotion_grid)
    env = {"FACESERVE_MODEL_REPOSITORY": str(repo), "FACESERVE_MODELS_WATCH_S": "0.5"}
    with serve(env) as url:
        models = httpx.post(f"{url}/models", timeout=30).json()["models"]
        emotion = next(m for m in models if m["name"] == "emotion")
        assert emotion["version"] == "1" and [(v["version"], v["serving"]) for v in emotion["versions"]] == [
            ("1", True), ("2", False)]
        assert emotion["versions"][1]["parity"]["top1_agreement"] == 1.0
        assert emotion["versions"][1]["source"].endswith("fer2013_mini_XCEPTION.119-0.65.hdf5")

        async def promote(client):
            done = await asyncio.to_thread(run_convert, "promote", "emotion", "2", "--repository", str(repo))
            assert done.returncode == 0, done.stderr

        async def rollback(client):
            done = await asyncio.to_thread(run_convert, "rollback", "emotion", "--repository", str(repo))
            assert done.returncode == 0, done.stderr
            reloaded = await client.post(f"{url}/models/reload")
            assert reloaded.status_code == 200, reloaded.text
            assert "emotion:1" in reloaded.json()["serving"]  # this worker serves it now, by the watcher or the call

        statuses, timed, ((promoting, promoted), (rolling_back, rolled_back)) = asyncio.run(analyze_through(url, image, [promote, rollback]))
        answers = [answer for answer, _, _ in timed]
        before = [a for a, asked, came in timed if came < promoting]
        v2_only = [a for a, asked, came in timed if asked >= promoted and came < rolling_back]
        after = [a for a, asked, came in timed if asked >= rolled_back]
        expected = {V1: scores_by_face(after[-1]), V2: scores_by_face(v2_only[-1])}
        models_now = httpx.post(f"{url}/models", timeout=30).json()["models"]

    assert set(statuses) == {200}, f"{len([s for s in statuses if s != 200])} failed of {len(statuses)}"
    counts = check_answers(answers, expected)
    assert counts[V1] > CLIENTS and counts[V2] > CLIENTS, counts
    assert {a["models"]["emotion"] for a in before} == {a["models"]["emotion"] for a in after} == {V1}
    assert {a["models"]["emotion"] for a in v2_only} == {V2}
    emotion = next(m for m in models_now if m["name"] == "emotion")
    assert emotion["version"] == "1" and [v["serving"] for v in emotion["versions"]] == [True, False]


PROMOTE_THEN_HANG = """
import sys, time
from pathlib import Path
from faceserve.models import versions
written = versions.write_config
def write_then_hang(config, path):
    written(config, path)
    print("wrote", path.name, flush=True)
    if path.name == sys.argv[3]:
        time.sleep(60)  # killed here
versions.write_config = write_then_hang
versions.promote(Path(sys.argv[1]), int(sys.argv[2]))
"""


def serves_consistently(repo: Path, emotion_grid) -> str:
    """A fresh process's view (a restart): the repository loads, its emotion version's model takes that version's
    crops, and the answer names it."""
    resources = Resources(dataclasses.replace(Settings.from_env(), repository=repo, models_watch_s=0))

    async def answer():
        try:
            await resources.start()
            return (await resources.pipeline.analyze(emotion_grid)).models["emotion"]
        finally:
            await resources.close()

    named = asyncio.run(answer())
    assert named == f"emotion:{load_spec(repo / 'emotion').version}"
    return named


@pytest.mark.parametrize("killed_after", ["gpu.pbtxt", "config.pbtxt"])
def test_kill_9_during_a_promotion_leaves_one_consistent_version(versioned, emotion_grid, tmp_path, killed_after):
    repo = fresh_copy(versioned, tmp_path)
    promoting = subprocess.Popen([sys.executable, "-c", PROMOTE_THEN_HANG, str(repo / "emotion"), "2", killed_after],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        for line in promoting.stdout:
            if line.strip() == f"wrote {killed_after}":
                break
        os.kill(promoting.pid, signal.SIGKILL)
    finally:
        promoting.wait(timeout=30)
    assert promoting.returncode == -signal.SIGKILL
    # killed before the config was replaced: version 1 serves; after: version 2 does, each whole
    assert serves_consistently(repo, emotion_grid) == (V1 if killed_after == "gpu.pbtxt" else V2)
    if killed_after == "gpu.pbtxt":  # the promotion, done again, completes
        assert run_convert("promote", "emotion", "2", "--repository", str(repo)).returncode == 0
        assert serves_consistently(repo, emotion_grid) == V2
    gpu = read_config(repo / "emotion" / GPU_CONFIG_FILE)
    assert list(gpu.version_policy.specific.versions) == [2]


def test_a_half_written_config_is_never_read(versioned, emotion_grid, tmp_path):
    """A process killed while writing leaves at most `config.pbtxt.partial`, which nobody reads and the next write
    replaces."""
    repo = fresh_copy(versioned, tmp_path)
    partial = repo / "emotion" / (CONFIG_FILE + ".partial")
    partial.write_text((repo / "emotion" / CONFIG_FILE).read_text()[:200])
    assert serves_consistently(repo, emotion_grid) == V1
    assert run_convert("promote", "emotion", "2", "--repository", str(repo)).returncode == 0
    assert not partial.exists() and serves_consistently(repo, emotion_grid) == V2


def shipping_commands() -> list[list[str]]:
    """The `python -m convert` commands of docs/models.md's steps, as written (continuation lines joined)."""
    text = (ROOT / "docs" / "models.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line)[3:] for line in block.splitlines() if line.startswith("python -m convert ")]


def test_the_shipping_steps_run_as_written(repository, fixtures, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(repository / "emotion", repo / "emotion")
    steps = shipping_commands()
    assert [step[0] for step in steps] == ["model", "versions", "promote", "rollback"]
    outputs = []
    for step in steps:
        args = [str(fixtures) + arg[len("../shared/fixtures"):] if arg.startswith("../shared/fixtures") else arg
                for arg in step]
        done = run_convert(*args, "--repository", str(repo))
        assert done.returncode == 0, (step, done.stderr)
        outputs.append(done)
    listed = [json.loads(line) for line in outputs[1].stdout.splitlines()]
    assert [(v["version"], v["serving"]) for v in listed] == [("1", True), ("2", False)]
    assert listed[1]["sha256"] == ENTRIES["emotion_mini_xception_48"]["sha256"]
    assert "emotion: version 2 serves (was 1)" in outputs[2].stderr
    assert "emotion: version 1 serves (was 2)" in outputs[3].stderr and load_spec(repo / "emotion").version == "1"
