"""The stored surfaces' hostile corpus (tests/hostile_store_corpus.py) against real services: SQLite and
PostgreSQL, each without API keys and with scoped keys. Every attack gets its exact status and error code,
never a 5xx, and leaves the store as it was: every table's row count and the gallery export's sha256 are
read before and after each one. Afterwards the service is ready and answers a good request."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid

import httpx
import psycopg
import pytest

from tests.hostile_corpus import good_jpeg
from tests.hostile_store_corpus import KEYS, Attack, Seed, for_mode
from tests.support import serve

MODES = [("sqlite", False), ("sqlite", True), ("postgres", False), ("postgres", True)]
SERVER_ENV = {"FACESERVE_WORKERS": "1", "FACESERVE_MAX_BATCH_IMAGES": "4", "FACESERVE_JOB_MAX_IMAGES": "1000"}


def key_file_text() -> str:
    return "".join(f"{key_id} {scope} sha256:{hashlib.sha256(key.encode()).hexdigest()}\n"
                   for key_id, scope, key in KEYS.values())


def auth(keyed: bool, who: str | None) -> dict:
    return {"Authorization": f"Bearer {KEYS[who][2]}"} if keyed and who else {}


class Deployment:
    def __init__(self, url: str, store_url: str, keyed: bool):
        self.url, self.store_url, self.keyed = url, store_url, keyed
        self.client = httpx.Client(base_url=url, timeout=120)

    def send(self, attack: Attack, seed: Seed) -> httpx.Response:
        kwargs = attack.request(seed)
        headers = {**kwargs.pop("headers", {}), **attack.headers, **auth(self.keyed, attack.key)}
        return self.client.request(attack.method, attack.route, headers=headers, **kwargs)

    def call(self, route: str, who: str = "admin", **kwargs) -> httpx.Response:
        response = self.client.post(route, headers=auth(self.keyed, who), **kwargs)
        assert response.is_success, f"{route}: {response.status_code} {response.text}"
        return response

    def stored(self) -> dict:
        """Every table's row count, and the digest of the export (less its header's time of export)."""
        header, *lines = self.call("/gallery/export", json={}).text.splitlines()
        header = {key: value for key, value in json.loads(header).items() if key != "exported_at"}
        export = "\n".join([json.dumps(header, sort_keys=True), *lines]).encode()
        return {"tables": row_counts(self.store_url), "export_sha256": hashlib.sha256(export).hexdigest()}


def row_counts(store_url: str) -> dict[str, int]:
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url[len("sqlite:///"):]) as connection:
            tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {table: connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in tables}
    with psycopg.connect(store_url) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        return {table: connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in tables}


def changes(before: dict, after: dict) -> str:
    tables = {name: (count, after["tables"].get(name)) for name, count in before["tables"].items()
              if after["tables"].get(name) != count}
    export = "" if before["export_sha256"] == after["export_sha256"] else ", the export"
    return f"CHANGED: rows {tables}{export}"


def make_seed(deployment: Deployment) -> Seed:
    face = good_jpeg()
    identity = deployment.call("/identities/create", who="enrol", json={"name": "Seed", "metadata": {"team": "a"}})
    identity_id = identity.json()["id"]
    added = deployment.call("/identities/add_faces", who="enrol", data={"identity_id": identity_id,
                                                                       "thumbnails": "true"},
                            files=[("images", ("seed.jpg", face, "image/jpeg"))]).json()
    header, line = [json.loads(text) for text in deployment.call("/gallery/export", json={}).text.splitlines()]
    request_id = deployment.call("/analyze", who="analyze",
                                 files={"image": ("a.jpg", face, "image/jpeg")}).json()["request_id"]
    job_id = deployment.call("/jobs/submit", who="analyze",
                             files=[("images", ("a.jpg", face, "image/jpeg"))]).json()["id"]
    deadline = time.monotonic() + 120
    while deployment.call("/jobs/status", who="analyze", json={"job_id": job_id}).json()["state"] not in (
            "done", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the seed job did not finish"
        time.sleep(0.2)
    return Seed(identity_id=identity_id, face_id=added["faces"][0]["id"], export_header=header, export_line=line,
                request_id=request_id, job_id=job_id)


@pytest.fixture(scope="module", params=MODES, ids=[f"{s}-{'keys' if k else 'nokeys'}" for s, k in MODES])
def deployment(request, repository, tmp_path_factory):
    engine, keyed = request.param
    data_dir = tmp_path_factory.mktemp(f"hostile-store-{engine}")
    if engine == "sqlite":
        store_url = f"sqlite:///{data_dir / 'faceserve.db'}"
    else:
        postgres = request.getfixturevalue("postgres")
        store_url = postgres.create_database(f"hostile_{uuid.uuid4().hex[:10]}")
    env = {**SERVER_ENV, "FACESERVE_DATA_DIR": str(data_dir), "FACESERVE_STORE": store_url}
    if keyed:
        key_file = data_dir / "keys"
        key_file.write_text(key_file_text())
        env["FACESERVE_API_KEYS_FILE"] = str(key_file)
    with serve(env) as url:
        deployment = Deployment(url, store_url, keyed)
        deployment.seed = make_seed(deployment)
        yield deployment
        deployment.client.close()


def test_every_attack_answers_as_designed_and_changes_nothing(deployment):
    attacks = for_mode(deployment.keyed)
    assert len(attacks) >= 60
    wrong = []
    for attack in attacks:
        before = deployment.stored()
        response = deployment.send(attack, deployment.seed)
        after = deployment.stored()
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        answered = (response.status_code, body.get("error"))
        if answered != attack.expect or after != before or not isinstance(body.get("message"), str):
            wrong.append(f"{attack.name}: {answered} (expected {attack.expect}); "
                         f"stored {'unchanged' if after == before else changes(before, after)}; "
                         f"{response.text[:200]}")
        assert response.status_code < 500, f"{attack.name}: {response.status_code} {response.text[:300]}"
    assert not wrong, "\n".join(wrong)


def test_still_ready_and_the_seed_still_identified(deployment):
    assert deployment.client.get("/readyz").status_code == 200
    found = deployment.call("/identify", who="analyze", files={"image": ("a.jpg", good_jpeg(), "image/jpeg")})
    faces = found.json()["faces"]
    assert len(faces) == 1 and faces[0]["identity"]["id"] == deployment.seed.identity_id, faces
