"""Feedback through the HTTP API of a real service, on SQLite and on PostgreSQL: analyze → correct → export and
summary; bad feedback named; corrections and remembered answers survive a restart."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid

import httpx
import pytest

from faceserve import devserver
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


def test_the_image_is_kept_only_when_asked(client, store_env, emotion_grid):
    kept, image = analyze_grid(client, emotion_grid, keep_image="true")
    plain, _ = analyze_grid(client, emotion_grid)
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


def test_survives_a_restart(store_env, emotion_grid):
    with start(server_env(store_env)) as server, httpx.Client(base_url=server.url, timeout=120) as first:
        analysis, _ = analyze_grid(first, emotion_grid)
        corrected = call(first, "/feedback", json={"request_id": analysis["request_id"], "face_index": 0,
                                                   "field": "gender", "correct": "female"})
    with start(server_env(store_env)) as server, httpx.Client(base_url=server.url, timeout=120) as second:
        assert [(row["field"], row["correct"]) for row in exported(second)
                if row["request_id"] == analysis["request_id"]] == [("gender", corrected["correct"])]
        later = call(second, "/feedback", json={"request_id": analysis["request_id"], "face_index": 1,
                                                "field": "age", "correct": "40"})
        assert later["model"] == analysis["models"]["age"]
