"""A candidate version on trial beside the serving one, on a real server (two workers) without a restart: emotion
v1 = mini_XCEPTION .102 serving, v2 = the 48x48 .119 converted by `convert model`.

`convert shadow emotion 2` under 16 clients: no request fails, every answer is version 1's, and the comparison report
(`/models/compare`) counts every answered face and its agreement is the one computed offline — both versions run
in-process by onnxruntime on the same crops of the same photos. `convert canary emotion 2 --share 0.5`: exactly the
requests whose id draws under 0.5 are answered by version 2, whole. Corrections stay with the version that answered.
Then promote and roll back; refusals change nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from faceserve.dev.fixtures import FIXTURES
from faceserve.models import heads
from faceserve.models.repository import CONFIG_FILE, model_file
from faceserve.models.rollout import drawn
from faceserve.models.versions import version_spec
from faceserve.pipeline import imaging
from faceserve.services import Services
from faceserve.settings import Settings
from faceserve.store import open_store
from tests.integration.test_convert import run_convert
from tests.integration.test_model_versions import fresh_copy, versioned  # noqa: F401 (the fixture)
from tests.support import ROOT, jpeg, serve

CLIENTS = 16
ROUNDS = 3  # each client sends every photo this many times per phase


@pytest.fixture(scope="module")
def photo_set(emotion_grid) -> dict[str, bytes]:
    """The emotion grid and the labelled detection photos (faces of every size, some none), as JPEG bytes."""
    photo_bytes = {"emotion_grid": jpeg(emotion_grid)}
    for path in sorted((FIXTURES / "detection").glob("*.jpg")):
        photo_bytes[path.stem] = path.read_bytes()
    return photo_bytes


class Offline:
    """Both versions of a head run in-process by onnxruntime on the crops of the faces a server answered."""

    def __init__(self, repo: Path, model: str = "emotion"):
        self.heads = {}
        for version in (1, 2):
            spec = version_spec(repo / model, version)
            session = ort.InferenceSession(str(model_file(repo / model, version)), providers=["CPUExecutionProvider"])
            self.heads[f"{model}:{version}"] = (heads.head_for(spec), session)
        self._cache: dict[tuple, dict[str, list[str]]] = {}

    def labels(self, data: bytes, answer: dict) -> dict[str, list[str]]:
        """Each version's label per face of `answer` (its boxes, in its order)."""
        boxes = [(f["box"]["x1"], f["box"]["y1"], f["box"]["x2"], f["box"]["y2"]) for f in answer["faces"]]
        key = (hash(data), tuple(boxes))
        if key not in self._cache:
            image = imaging.decode(data)
            found = {}
            for ref, (head, session) in self.heads.items():
                if not boxes:
                    found[ref] = []
                    continue
                rows = session.run(list(head.spec.output_names), {head.spec.input_name: head.batch(image, boxes)})
                found[ref] = [said["label"] for said in head.decode(dict(zip(head.spec.output_names, rows)))]
            self._cache[key] = found
        return self._cache[key]

    def shadow_agreement(self, photo_set: dict[str, bytes], shadowed: list[tuple[str, dict]]) -> tuple[int, int]:
        """(faces on which the two versions agree, faces) over shadowed answers, each of which must carry the
        serving version's labels (`emotion:1`), as run offline."""
        agreeing = faces = 0
        for name, answer in shadowed:
            labels = self.labels(photo_set[name], answer)
            assert [f["emotion"]["label"] for f in answer["faces"]] == labels["emotion:1"], name
            agreeing += sum(a == b for a, b in zip(labels["emotion:1"], labels["emotion:2"]))
            faces += len(answer["faces"])
        return agreeing, faces


async def load(url: str, photo_bytes: dict[str, bytes], rounds: int = ROUNDS) -> tuple[list, list, float]:
    """16 clients, each sending every photo `rounds` times: the statuses, the answers (photo name, answer), and the
    requests per second."""
    statuses, answers = [], []
    names = list(photo_bytes)
    async with httpx.AsyncClient(timeout=120) as client:
        async def one(offset: int):
            for i in range(rounds * len(names)):
                name = names[(i + offset) % len(names)]
                response = await client.post(f"{url}/analyze",
                                             files={"image": (f"{name}.jpg", photo_bytes[name], "image/jpeg")})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answers.append((name, response.json()))
        started = time.monotonic()
        await asyncio.gather(*(one(offset) for offset in range(CLIENTS)))
        return statuses, answers, len(statuses) / (time.monotonic() - started)


def convert(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run_convert(*args, "--repository", str(repo))


def follow(url: str) -> dict:
    """This worker reloads now; the other follows by its watcher (every 0.5 s)."""
    reloaded = httpx.post(f"{url}/models/reload", timeout=60)
    assert reloaded.status_code == 200, reloaded.text
    time.sleep(1.5)
    return reloaded.json()


def compare(url: str, model: str = "emotion") -> httpx.Response:
    return httpx.post(f"{url}/models/compare", json={"model": model}, timeout=60)


def settled_report(url: str, faces: dict[str, int], timeout_s: float = 20.0) -> dict:
    """The report once its pairs count `faces` (mode: faces) — every answer written by the workers' writers."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = compare(url).json()
        counted = {pair["mode"]: pair["faces"] for pair in report["pairs"]}
        if counted == faces or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def test_shadow_then_canary_under_load_reported_and_checked_offline_then_promote_and_rollback(
        versioned, photo_set, tmp_path):  # noqa: F811
    repo = fresh_copy(versioned, tmp_path)
    offline = Offline(repo)
    data_dir = tmp_path / "data"
    env = {"FACESERVE_MODEL_REPOSITORY": str(repo), "FACESERVE_MODELS_WATCH_S": "0.5",
           "FACESERVE_DATA_DIR": str(data_dir)}
    measured = {}
    with serve(env) as url:
        statuses, plain, measured["no trial"] = asyncio.run(load(url, photo_set))
        assert set(statuses) == {200}

        # ---- shadow -----------------------------------------------------------------------------------------
        refused_config = (repo / "emotion" / CONFIG_FILE).read_text()
        refused = convert(repo, "shadow", "emotion", "7")
        assert refused.returncode == 2 and "emotion has no version 7 (built: 1, 2)" in refused.stderr
        assert (repo / "emotion" / CONFIG_FILE).read_text() == refused_config
        started = convert(repo, "shadow", "emotion", "2")
        assert started.returncode == 0, started.stderr
        assert follow(url)["trials"] == [{"model": "emotion", "mode": "shadow", "candidate": "emotion:2"}]
        (emotion,) = [m for m in httpx.post(f"{url}/models", timeout=30).json()["models"] if m["name"] == "emotion"]
        assert (emotion["version"], emotion["trial"]) == ("1", {"mode": "shadow", "candidate": "emotion:2"})
        statuses, shadowed, measured["shadow"] = asyncio.run(load(url, photo_set))
        assert set(statuses) == {200}, f"{sum(s != 200 for s in statuses)} failed of {len(statuses)}"
        assert {answer["models"]["emotion"] for _, answer in shadowed} == {"emotion:1"}
        agreeing, faces = offline.shadow_agreement(photo_set, shadowed)

        # ---- canary -----------------------------------------------------------------------------------------
        assert convert(repo, "canary", "emotion", "2", "--share", "0.5").returncode == 0
        assert follow(url)["trials"] == [{"model": "emotion", "mode": "canary", "candidate": "emotion:2",
                                          "share": 0.5}]
        statuses, canaried, measured["canary 0.5"] = asyncio.run(load(url, photo_set, rounds=1))
        assert set(statuses) == {200}
        by_candidate = canary_faces = canary_agreeing = 0
        for name, answer in canaried:
            expected = "emotion:2" if drawn(answer["request_id"]) < 0.5 else "emotion:1"
            assert answer["models"]["emotion"] == expected
            labels = offline.labels(photo_set[name], answer)
            assert [f["emotion"]["label"] for f in answer["faces"]] == labels[expected], (name, expected)
            by_candidate += len(answer["faces"]) if expected == "emotion:2" else 0
            canary_faces += len(answer["faces"])
            canary_agreeing += sum(a == b for a, b in zip(labels["emotion:1"], labels["emotion:2"]))
        assert 0 < by_candidate < canary_faces

        # ---- corrections stay with the version that answered -------------------------------------------------
        shadow_answer = next(answer for _, answer in shadowed if answer["faces"])
        canary_answer = next(answer for _, answer in canaried
                             if answer["faces"] and answer["models"]["emotion"] == "emotion:2")
        corrected = []
        for answer in (shadow_answer, canary_answer):
            said = answer["faces"][0]["emotion"]["label"]
            stored = httpx.post(f"{url}/feedback", timeout=30, json={
                "request_id": answer["request_id"], "face_index": 0, "field": "emotion",
                "correct": "neutral" if said != "neutral" else "happy"}).json()
            corrected.append(stored["model"])
        assert corrected == ["emotion:1", "emotion:2"]

        # ---- the report ---------------------------------------------------------------------------------------
        report = settled_report(url, {"shadow": faces, "canary": canary_faces})
        pairs = {pair["mode"]: pair for pair in report["pairs"]}
        shadow, canary = pairs["shadow"], pairs["canary"]
        with_faces = [answer for _, answer in shadowed if answer["faces"]]  # a request without a face compares none
        assert (shadow["serving"], shadow["candidate"], shadow["requests"], shadow["faces"]) == (
            "emotion:1", "emotion:2", len(with_faces), faces)
        assert shadow["agreement"] == pytest.approx(agreeing / faces, abs=1e-12)  # the offline figure, exactly
        assert sum(p["count"] for p in shadow["confusion"]) == faces
        assert sum(p["count"] for p in shadow["confusion"] if p["serving"] == p["candidate"]) == agreeing
        assert shadow["answered_by_candidate"] == 0 and shadow["corrected"]["faces"] == 1
        assert (canary["faces"], canary["answered_by_candidate"]) == (canary_faces, by_candidate)
        assert canary["agreement"] == pytest.approx(canary_agreeing / canary_faces, abs=1e-12)
        assert canary["corrected"]["faces"] == 1
        assert set(shadow["latency"]) == {"emotion:1", "emotion:2"}
        assert shadow["latency"]["emotion:1"]["requests"] == len(with_faces)
        assert [(v["model"], v["corrections"]) for v in report["feedback"]] == [("emotion:1", 1), ("emotion:2", 1)]
        cli = subprocess.run([sys.executable, "-m", "faceserve", "models", "compare", "emotion"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "FACESERVE_MODEL_REPOSITORY": str(repo),
                                  "FACESERVE_DATA_DIR": str(data_dir)})
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["pairs"] == report["pairs"]

        # ---- bad input changes nothing ------------------------------------------------------------------------
        for model in ("nope", "face_detector"):
            response = compare(url, model)
            assert response.status_code == 404 and response.json()["error"] == "unknown_model", response.text
        assert httpx.post(f"{url}/models/compare", json={}, timeout=30).status_code == 400
        assert convert(repo, "canary", "emotion", "2", "--share", "2").returncode == 2
        assert convert(repo, "shadow", "face_detector", "1").returncode == 2
        assert follow(url)["trials"][0]["share"] == 0.5

        # ---- promote (the trial ends with it), roll back, without a restart -----------------------------------
        assert convert(repo, "promote", "emotion", "2").returncode == 0
        reloaded = follow(url)
        assert reloaded["trials"] == [] and "emotion:2" in reloaded["serving"]
        statuses, promoted, _ = asyncio.run(load(url, {"emotion_grid": photo_set["emotion_grid"]}, rounds=1))
        assert set(statuses) == {200} and {a["models"]["emotion"] for _, a in promoted} == {"emotion:2"}
        assert convert(repo, "rollback", "emotion").returncode == 0
        assert "emotion:1" in follow(url)["serving"]
        statuses, rolled_back, _ = asyncio.run(load(url, {"emotion_grid": photo_set["emotion_grid"]}, rounds=1))
        assert set(statuses) == {200} and {a["models"]["emotion"] for _, a in rolled_back} == {"emotion:1"}
        time.sleep(1.0)  # the writers' windows
        after = {pair["mode"]: pair["faces"] for pair in compare(url).json()["pairs"]}
        assert after == {"shadow": faces, "canary": canary_faces}  # nothing compared without a trial
        with open_store(f"sqlite:///{data_dir / 'faceserve.db'}") as store, store.read() as tx:
            assert tx.one("SELECT COUNT(*) FROM feedback_comparisons")[0] == faces + canary_faces
    print(f"\nthroughput at c={CLIENTS}, two workers, this loaded machine (req/s): "
          + ", ".join(f"{phase} {rate:.1f}" for phase, rate in measured.items())
          + f"; shadow/no trial {measured['shadow'] / measured['no trial']:.2f}x; report latency per version (ms, "
            f"mean/p50/p95): " + "; ".join(f"{ref} {v['mean_ms']}/{v['p50_ms']}/{v['p95_ms']}"
                                            for ref, v in shadow["latency"].items())
          + f"; shadow agreement {agreeing}/{faces}, canary {by_candidate} of {canary_faces} faces by emotion:2")


def trial_commands() -> list[list[str]]:
    """The `python -m` commands of docs/models.md's trial steps, as written."""
    text = (ROOT / "docs" / "models.md").read_text()
    section = text.split("## Trying a candidate on live traffic", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split()[2:] for line in block.splitlines() if line.startswith("python -m ")]


def test_the_trial_steps_run_as_written(versioned, tmp_path):  # noqa: F811
    """The docs' `python -m` lines in order on a copy of the repository (the curl lines' routes are those of the
    test above): each succeeds and does what its comment says."""
    repo = fresh_copy(versioned, tmp_path)
    steps = trial_commands()
    assert [step[:2] for step in steps] == [["convert", "shadow"], ["faceserve", "models"], ["convert", "canary"],
                                            ["convert", "candidate-stop"], ["convert", "promote"]]
    env = {**os.environ, "FACESERVE_MODEL_REPOSITORY": str(repo), "FACESERVE_DATA_DIR": str(tmp_path / "data")}
    outputs = []
    for module, *args in steps:
        if module == "convert":
            args += ["--repository", str(repo)]
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (args, done.stderr)
        outputs.append(done)
    assert "emotion: version 2 runs as a shadow candidate" in outputs[0].stderr
    assert json.loads(outputs[1].stdout) == {"model": "emotion", "field": "emotion",
                                             "trial": {"mode": "shadow", "candidate": "emotion:2"}, "pairs": [],
                                             "feedback": []}
    assert "emotion: version 2 runs as a canary candidate answering 0.1 of requests" in outputs[2].stderr
    assert "emotion: the canary of version 2 stopped" in outputs[3].stderr
    assert "emotion: version 2 serves (was 1)" in outputs[4].stderr


@pytest.fixture(scope="module")
def gender_versioned(repository, fixtures, tmp_path_factory) -> Path:
    """face_detector and gender (SSR-Net, serving) as built, gender_mini_XCEPTION converted as gender's version 2."""
    repo = tmp_path_factory.mktemp("gender-versions") / "repo"
    for name in ("face_detector", "gender"):
        shutil.copytree(repository / name, repo / name)
    result = run_convert("model", str(fixtures / "models" / "gender_mini_XCEPTION.21-0.95.hdf5"), "--name", "gender",
                         "--recipe", str(ROOT / "convert" / "manifest.toml") + "#gender_mini_xception",
                         "--repository", str(repo))
    assert result.returncode == 0, result.stderr
    return repo


def test_gender_ssrnet_shadowed_by_mini_xception_in_process_agrees_with_the_offline_figure(
        gender_versioned, photo_set, tmp_path):
    """Two decoders (SSR-Net's sigmoid, mini_XCEPTION's softmax) and two crops (40 % margin and min-max stretch in
    BGR; 30/60 px pads in grey) compared face by face under 16 concurrent callers of one process."""
    repo = fresh_copy(gender_versioned, tmp_path)
    assert convert(repo, "shadow", "gender", "2").returncode == 0
    settings = dataclasses.replace(Settings.from_env(), repository=repo, models_watch_s=0,
                                   store=f"sqlite:///{tmp_path / 'faceserve.db'}")
    services = Services.build(settings)
    decoded = {name: imaging.decode(data) for name, data in photo_set.items()}

    async def scenario():
        await services.resources.start()
        answers = []

        async def client(offset: int):
            for i in range(len(decoded)):
                name = list(decoded)[(i + offset) % len(decoded)]
                answers.append((name, await services.analysis.analyze_decoded(
                    "client:test", decoded[name], photo_set[name], None, False)))
        try:
            await asyncio.gather(*(client(offset) for offset in range(CLIENTS)))
            (await services.resources.feedback()).flush()
            return answers, await services.models.compare("gender")
        finally:
            await services.close()

    answers, report = asyncio.run(scenario())
    offline = Offline(repo, "gender")
    agreeing = faces = 0
    for name, analysis in answers:
        answer = analysis.model_dump()
        assert answer["models"]["gender"] == "gender:1"
        labels = offline.labels(photo_set[name], answer)
        assert [f["gender"]["label"] for f in answer["faces"]] == labels["gender:1"], name
        agreeing += sum(a == b for a, b in zip(labels["gender:1"], labels["gender:2"]))
        faces += len(answer["faces"])
    (pair,) = report.pairs
    assert (pair.serving, pair.candidate, pair.mode, pair.faces) == ("gender:1", "gender:2", "shadow", faces)
    assert pair.agreement == pytest.approx(agreeing / faces, abs=1e-12)
    print(f"\ngender SSR-Net vs gender_mini_XCEPTION, shadow: agreement {agreeing}/{faces}; latency (ms, mean/p95): "
          + "; ".join(f"{ref} {v.mean_ms}/{v.p95_ms}" for ref, v in pair.latency.items()))
