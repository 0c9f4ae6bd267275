"""API keys: missing, wrong and right keys on every endpoint; health and metrics open; keys never logged."""

from __future__ import annotations

import httpx
import pytest

from tests.hostile_corpus import good_jpeg
from tests.support import serve, serve_log

KEY = "fs-test-key-7f3a9c0d51b2e8"
FILE_KEY = "fs-file-key-0b6e4d2a93c1"
ENDPOINTS = ("analyze", "analyze_batch", "annotate", "classify", "rotate", "models")


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text(f"# one key per line\n{FILE_KEY}\n")
    with serve({"FACESERVE_API_KEYS": f"{KEY}, another-key", "FACESERVE_API_KEYS_FILE": str(keys_file)}) as url:
        yield url


def upload() -> dict:
    return {"files": {"image": ("a.jpg", good_jpeg(), "image/jpeg")}}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("headers,message", [
    ({}, "an API key is required"),
    ({"X-API-Key": "wrong"}, "not valid"),
    ({"Authorization": f"Bearer {KEY}x"}, "not valid"),
    ({"Authorization": f"Basic {KEY}"}, "an API key is required"),
    ({"Authorization": "Bearer"}, "an API key is required"),
    ({"X-API-Key": ""}, "not valid"),
])
def test_missing_or_wrong_key_is_401(server, endpoint, headers, message):
    response = httpx.post(f"{server}/{endpoint}", headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized" and message in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY},
                                     {"x-api-key": FILE_KEY}, {"authorization": "bearer another-key"}])
def test_right_key_is_served(server, headers):
    response = httpx.post(f"{server}/analyze", headers=headers, timeout=30, **upload())
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 1 and faces[0]["emotion"]["label"] == "happy"


def test_health_and_metrics_open_docs_not(server):
    for path in ("/readyz", "/livez", "/metrics"):
        assert httpx.get(f"{server}{path}", timeout=30).status_code == 200, path
    assert httpx.get(f"{server}/docs.json", timeout=30).status_code == 401
    assert httpx.get(f"{server}/docs.json", headers={"X-API-Key": KEY}, timeout=30).status_code == 200


def test_keys_never_logged(server):
    httpx.post(f"{server}/analyze", headers={"X-API-Key": KEY}, timeout=30, **upload())
    httpx.post(f"{server}/analyze", headers={"X-API-Key": "wrong-guess-123"}, timeout=30)
    text = serve_log(server).read_text()
    assert "refused POST /analyze: wrong API key" in text or "401" in text
    for secret in (KEY, FILE_KEY, "wrong-guess-123"):
        assert secret not in text
