"""Feedback through the HTTP API of a real service, on SQLite and on PostgreSQL: analyze → correct → export and
summary; bad feedback named; corrections and remembered answers survive a restart, every queued answer a clean stop,
every committed one a kill -9; attacked (issue 20): another client's request id, formulas in the export, unbounded
texts, guessable ids, each refusal leaving the store as it was. Without keys clients are told apart by address: the second client connects from 127.0.0.2 (loopback too)."""

from __future__ import annotations

import csv
import hashlib
import io
import time
import uuid
from contextlib import contextmanager

import httpx
import pytest

from faceserve.dev import devserver
from faceserve.store import open_store
from tests.support import LOG_DIR, jpeg


def start(env: dict[str, str]):
    return devserver.bentoml_serve(LOG_DIR, {"FACESERVE_WORKERS": "1", **env})


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_env(request, repository, tmp_path_factory):
    if request.param == "sqlite":
        data_dir = tmp_path_factory.mktemp("feedback-data")
        yield {"FACESERVE_DATA_DIR": str(data_dir), "store": f"sqlite:///{data_dir / 'faceserve.db'}"}
        return
    postgres = request.getfixturevalue("postgres")
    name = f"feedback_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    yield {"FACESERVE_STORE": url, "store": url}
    postgres.drop_database(name)


def server_env(store_env: dict) -> dict:
    return {key: value for key, value in store_env.items() if key != "store"}


@pytest.fixture(scope="module")
def client(store_env):
    with start(server_env(store_env)) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def call(client: httpx.Client, route: str, **kwargs) -> dict:
    response = client.post(route, **kwargs)
    assert response.is_success, f"{route}: {response.status_code} {response.text}"
    return response.json()


def analyze_grid(client: httpx.Client, emotion_grid, **fields) -> tuple[dict, bytes]:
    image = jpeg(emotion_grid)
    return call(client, "/analyze", data=fields, files={"image": ("grid.jpg", image, "image/jpeg")}), image


def exported(client: httpx.Client) -> list[dict]:
    response = client.post("/feedback/export")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_round_trip_analyze_correct_export_summary(client, emotion_grid):
    analysis, image = analyze_grid(client, emotion_grid)
    said = analysis["faces"][2]["emotion"]["label"]
    correct = "neutral" if said != "neutral" else "happy"
    stored = call(client, "/feedback", json={"request_id": analysis["request_id"], "face_index": 2, "field": "emotion",
                                             "model_said": said, "correct": correct, "comment": "looks calm"})
    assert stored["model"] == analysis["models"]["emotion"] == "emotion:1"
    assert stored["image_sha256"] == hashlib.sha256(image).hexdigest()
    (row,) = [r for r in exported(client) if r["request_id"] == analysis["request_id"]]
    assert (row["field"], row["face_index"], row["model_said"], row["correct"], row["comment"]) == (
        "emotion", "2", said, correct, "looks calm")
    assert (row["model_name"], row["model_version"], row["image_sha256"]) == ("emotion", "1", stored["image_sha256"])
    summary = call(client, "/feedback/summary")
    (emotion,) = [f for f in summary["fields"] if f["field"] == "emotion"]
    assert emotion["count"] >= 1
    assert {"model_said": said, "correct": correct} in [
        {k: c[k] for k in ("model_said", "correct")} for c in emotion["confusions"]]


def test_every_answer_carries_a_request_id(client, emotion_grid):
    image = ("grid.jpg", jpeg(emotion_grid), "image/jpeg")
    batch = call(client, "/analyze_batch", files=[("images", image), ("images", image)])
    ids = [result["request_id"] for result in batch["results"]]
    classified = call(client, "/classify", files={"image": image})
    assert len(set(ids + [classified["request_id"]])) == 3 and all(ids)
    stored = call(client, "/feedback", json={"request_id": classified["request_id"], "field": "label",
                                             "correct": "drawing"})
    assert (stored["model"], stored["model_said"], stored["face_index"]) == ("nsfw_mobilenet_v2:1", "neutral", None)


def written(store_env: dict, *request_ids: str, timeout_s: float = 10.0) -> None:
    """Wait until the service's writer has written these answers (it does within a group's window of answering)."""
    deadline = time.monotonic() + timeout_s
    with open_store(store_env["store"]) as store:
        while True:
            with store.read() as tx:
                found = tx.all(f"SELECT id FROM feedback_requests WHERE id IN ({', '.join('?' * len(request_ids))})",
                               request_ids)
            if len(found) == len(request_ids):
                return
            assert time.monotonic() < deadline, f"answers not written within {timeout_s} s: {request_ids}"
            time.sleep(0.02)


def test_the_image_is_kept_only_when_asked(client, store_env, emotion_grid):
    kept, image = analyze_grid(client, emotion_grid, keep_image="true")
    plain, _ = analyze_grid(client, emotion_grid)
    written(store_env, kept["request_id"], plain["request_id"])
    with open_store(store_env["store"]) as store, store.read() as tx:
        stored = dict(tx.all("SELECT id, image FROM feedback_requests WHERE id IN (?, ?)",
                             (kept["request_id"], plain["request_id"])))
    assert bytes(stored[kept["request_id"]]) == image and stored[plain["request_id"]] is None


@pytest.mark.parametrize("change, status, code, named", [
    ({"request_id": "0190aaaa-0000-7000-8000-000000000000"}, 404, "unknown_request", "0190aaaa"),
    ({"field": "hair"}, 400, "unknown_field", "age, emotion, gender"),
    ({"face_index": 4}, 400, "face_index_out_of_range", "4 faces (0 to 3)"),
    ({"correct": "bored"}, 400, "unknown_label", "angry, disgust, fear, happy, sad, surprise, neutral"),
    ({"field": "age", "correct": "-3"}, 400, "invalid_value", "0 to 150"),
])
def test_bad_feedback_is_a_4xx_naming_what_is_wrong(client, emotion_grid, change, status, code, named):
    analysis, _ = analyze_grid(client, emotion_grid)
    before = call(client, "/feedback/summary")["total"]
    body = {"request_id": analysis["request_id"], "face_index": 0, "field": "emotion", "correct": "sad", **change}
    response = client.post("/feedback", json=body)
    assert response.status_code == status and response.json()["error"] == code and named in response.json()["message"]
    assert call(client, "/feedback/summary")["total"] == before


def classify(client: httpx.Client, image: bytes) -> str:
    return call(client, "/classify", files={"image": ("grid.jpg", image, "image/jpeg")})["request_id"]


def correct_label(client: httpx.Client, request_id: str) -> httpx.Response:
    return client.post("/feedback", json={"request_id": request_id, "field": "label", "correct": "drawing"})


def test_a_clean_stop_keeps_every_answer_and_a_kill_loses_only_the_last_groups(store_env, emotion_grid):
    """Answers are written by a background writer in group commits (docs/feedback.md): a clean stop writes every
    queued one; `kill -9` loses only answers still queued (the last group window's), and every answer whose group
    committed can be corrected after the restart."""
    image = jpeg(emotion_grid)
    # A minute's window: only a correction (which writes what it needs first) or the stop writes anything.
    with start({**server_env(store_env), "FACESERVE_ANSWERS_GROUP_MS": "60000"}) as server, \
            httpx.Client(base_url=server.url, timeout=120) as first:
        analysis, _ = analyze_grid(first, emotion_grid)
        corrected = call(first, "/feedback", json={"request_id": analysis["request_id"], "face_index": 0,
                                                   "field": "gender", "correct": "female"})
        queued = [classify(first, image) for _ in range(3)]
    window_s = 2.0
    with start({**server_env(store_env), "FACESERVE_ANSWERS_GROUP_MS": str(window_s * 1000)}) as server, \
            httpx.Client(base_url=server.url, timeout=120) as second:
        assert [(row["field"], row["correct"]) for row in exported(second)
                if row["request_id"] == analysis["request_id"]] == [("gender", corrected["correct"])]
        later = call(second, "/feedback", json={"request_id": analysis["request_id"], "face_index": 1,
                                                "field": "age", "correct": "40"})
        assert later["model"] == analysis["models"]["age"]
        assert [correct_label(second, request_id).status_code for request_id in queued] == [200] * 3
        answered = []  # (request id, when its answer arrived)
        for _ in range(6):
            answered.append((classify(second, image), time.monotonic()))
        time.sleep(window_s * 2)  # their group's window has passed: committed, whatever the machine's speed
        for _ in range(3):  # answered well inside one window, then killed before it ends
            answered.append((classify(second, image), time.monotonic()))
        server.kill()
        killed_at = time.monotonic()
    with open_store(store_env["store"]) as store, store.read() as tx:
        stored = {row[0] for row in tx.all("SELECT id FROM feedback_requests")}
    kept = [request_id for request_id, _ in answered if request_id in stored]
    lost = [(request_id, at) for request_id, at in answered if request_id not in stored]
    assert len(kept) >= 6 and kept == [request_id for request_id, _ in answered[:len(kept)]]  # the tail is lost
    assert lost and all(killed_at - at < window_s + 2 for _, at in lost)  # only the last groups' window
    with start(server_env(store_env)) as server, httpx.Client(base_url=server.url, timeout=120) as third:
        assert [correct_label(third, request_id).status_code for request_id in kept] == [200] * len(kept)
        for request_id, _ in lost:
            response = correct_label(third, request_id)
            assert (response.status_code, response.json()["error"]) == (404, "unknown_request")


@pytest.fixture(scope="module")
def server_url(client) -> str:
    return str(client.base_url)


@contextmanager
def client_from(url: str, address: str):
    """A client whose requests come from `address` (another caller to a keyless service)."""
    with httpx.Client(base_url=url, timeout=120, transport=httpx.HTTPTransport(local_address=address)) as other:
        yield other


def stored_rows(store_env: dict) -> dict[str, list[tuple]]:
    with open_store(store_env["store"]) as store, store.read() as tx:
        return {table: tx.all(f"SELECT * FROM {table} ORDER BY id")
                for table in ("feedback_requests", "feedback_corrections")}


def refused(client: httpx.Client, store_env: dict, body: dict) -> tuple[int, str, str]:
    """`/feedback`'s (status, code, message) for `body`, having checked that the store is as it was."""
    before = stored_rows(store_env)
    response = client.post("/feedback", json=body)
    assert stored_rows(store_env) == before
    return response.status_code, response.json()["error"], response.json()["message"]


def test_another_clients_answer_is_as_unknown_as_none(client, server_url, store_env, emotion_grid):
    analysis, _ = analyze_grid(client, emotion_grid)
    written(store_env, analysis["request_id"])
    body = {"request_id": analysis["request_id"], "face_index": 0, "field": "emotion", "correct": "sad"}
    nobodys = str(uuid.UUID(int=uuid.UUID(analysis["request_id"]).int ^ 1))
    with client_from(server_url, "127.0.0.2") as other:
        theirs = refused(other, store_env, body)
        unknown = refused(other, store_env, {**body, "request_id": nobodys})
        assert theirs[:2] == unknown[:2] == (404, "unknown_request")
        assert theirs[2] == unknown[2].replace(nobodys, analysis["request_id"])
        own, _ = analyze_grid(other, emotion_grid)  # its own answers it may correct
        assert call(other, "/feedback", json={**body, "request_id": own["request_id"]})["correct"] == "sad"
    assert call(client, "/feedback", json=body)["request_id"] == analysis["request_id"]


def test_request_ids_of_one_batch_are_not_guessable_from_each_other(client, emotion_grid):
    image = ("grid.jpg", jpeg(emotion_grid), "image/jpeg")
    batch = call(client, "/analyze_batch", files=[("images", image)] * 4)
    ids = [uuid.UUID(result["request_id"]) for result in batch["results"]]
    assert ids == sorted(ids) and all(b.int - a.int > 2**32 for a, b in zip(ids, ids[1:]))


def test_the_export_holds_no_formula(client, emotion_grid):
    analysis, _ = analyze_grid(client, emotion_grid)
    formulas = ["=1+1", "+1+1", "-1+1", "@SUM(1,1)", "\t=1+1", "\r=1+1", '=HYPERLINK("http://x.example","y")']
    for formula in formulas:
        call(client, "/feedback", json={"request_id": analysis["request_id"], "face_index": 1, "field": "emotion",
                                        "correct": "sad", "comment": formula})
    response = client.post("/feedback/export")
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row)
    comments = [row[rows[0].index("comment")] for row in rows if row[1] == analysis["request_id"]]
    assert comments == ["'" + formula for formula in formulas]


@pytest.mark.parametrize("change, code, limit", [
    ({"field": "identity", "correct": "x" * 201}, "correct_too_long", 200),
    ({"model_said": "x" * 201}, "model_said_too_long", 200),
    ({"comment": "x" * 2001}, "comment_too_long", 2000),
])
def test_every_text_of_a_correction_is_bounded(client, store_env, emotion_grid, change, code, limit):
    analysis, _ = analyze_grid(client, emotion_grid)
    written(store_env, analysis["request_id"])
    body = {"request_id": analysis["request_id"], "face_index": 0, "field": "emotion", "correct": "sad", **change}
    status, error, message = refused(client, store_env, body)
    assert (status, error) == (400, code) and f"at most {limit}" in message
