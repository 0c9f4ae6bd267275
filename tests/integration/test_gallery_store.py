"""The gallery on both stores, against real databases: SQLite files and a real PostgreSQL server.

Every test of the suite runs on each store; the PostgreSQL server is started once per session
(faceserve/postgres_local.py) and each test gets its own database on it.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from faceserve.errors import InvalidRequest, ModelMismatch, NotFound, StoreUnavailable
from faceserve.gallery import EmbeddingModel, Gallery, ImportCounts, NewFace, TransferCounts
from faceserve.store import open_store
from tests.support import ROOT

MODEL = EmbeddingModel("test-embedder", "1", 32)
VISIBLE_WITHIN_S = 1.0  # issue 12: an enrolment is visible to every worker within one second


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store_url(request, tmp_path):
    """Makes another empty store of the test's kind and returns its URL: a SQLite file, or a database of
    its own on the session's PostgreSQL server."""
    databases: list[str] = []

    def make() -> str:
        databases.append(f"gallery_{uuid.uuid4().hex[:12]}")
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / databases[-1]}.db"
        return request.getfixturevalue("postgres").create_database(databases[-1])

    yield make
    if request.param == "postgresql":
        for name in databases:
            request.getfixturevalue("postgres").drop_database(name)


@pytest.fixture
def store_url(new_store_url) -> str:
    return new_store_url()


@pytest.fixture
def open_gallery(store_url):
    """Opens a Gallery over a Store of its own (on the test's store unless told another), as each worker
    process or replica does."""
    stores = []

    def open_(model: EmbeddingModel = MODEL, url: str | None = None) -> Gallery:
        store = open_store(url or store_url)
        stores.append(store)
        return Gallery(store, model)

    yield open_
    for store in stores:
        store.close()


@pytest.fixture
def gallery(open_gallery) -> Gallery:
    return open_gallery()


def jpeg(shade: int, side: int = 8) -> bytes:
    """A real small JPEG (stored thumbnails are always JPEG re-encoded from their pixels)."""
    encoded = io.BytesIO()
    Image.new("RGB", (side, side), (shade, 255 - shade, 128)).save(encoded, "JPEG")
    return encoded.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
        return np.asarray(image.convert("RGB"), np.int16)


def face(rng: np.random.Generator, *, vector: np.ndarray | None = None, thumbnail: bytes | None = None) -> NewFace:
    vector = rng.standard_normal(MODEL.dimension).astype(np.float32) if vector is None else vector
    return NewFace(vector, hashlib.sha256(vector.tobytes()).hexdigest(), (10.0, 20.0, 110.0, 140.0), thumbnail)


def reference_search(vectors: dict[str, list[np.ndarray]], queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Brute force: each identity's best cosine over its faces, top k."""
    unit = lambda v: np.asarray(v, np.float64) / np.linalg.norm(v)  # noqa: E731
    answers = []
    for query in queries:
        scores = {identity: max(float(unit(query) @ unit(v)) for v in faces) for identity, faces in vectors.items()
                  if faces}
        answers.append(sorted(scores.items(), key=lambda item: -item[1])[:k])
    return answers


def test_create_get_add_and_thumbnails(gallery):
    rng = np.random.default_rng(1)
    ada = gallery.create_identity("Ada Lovelace", {"team": "analytical", "badge": 7},
                                  faces=[face(rng), face(rng, thumbnail=jpeg(40))])
    assert (ada.name, ada.metadata, ada.face_count) == ("Ada Lovelace", {"team": "analytical", "badge": 7}, 2)
    assert [f.has_thumbnail for f in ada.faces].count(True) == 1
    assert {(f.model_name, f.model_version, f.dimension, f.box) for f in ada.faces} == {
        (MODEL.name, MODEL.version, MODEL.dimension, (10.0, 20.0, 110.0, 140.0))}
    with_thumbnail = next(f for f in ada.faces if f.has_thumbnail)
    without = next(f for f in ada.faces if not f.has_thumbnail)
    stored = gallery.thumbnail(with_thumbnail.id)
    assert stored[:2] == b"\xff\xd8" and np.abs(decoded(stored) - decoded(jpeg(40))).max() <= 8
    assert gallery.thumbnail(without.id) is None

    added = gallery.add_faces(ada.id, [face(rng), face(rng)])
    assert len(added) == 2 and {f.identity_id for f in added} == {ada.id}
    again = gallery.get_identity(ada.id)
    assert again.face_count == 4 and {f.id for f in again.faces} == {f.id for f in ada.faces} | {f.id for f in added}
    assert not hasattr(again.faces[0], "vector")

    with pytest.raises(NotFound):
        gallery.get_identity(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        gallery.add_faces(str(uuid.uuid4()), [face(rng)])
    with pytest.raises(InvalidRequest, match="32 values"):
        gallery.add_faces(ada.id, [face(rng, vector=np.ones(31, np.float32))])
    with pytest.raises(InvalidRequest, match="name"):
        gallery.create_identity("  ")
    assert gallery.get_identity(ada.id).face_count == 4  # nothing of the refused calls was written


def test_pagination_is_stable_and_counts_faces(gallery):
    rng = np.random.default_rng(2)
    created = [gallery.create_identity(f"person {i:02d}", faces=[face(rng) for _ in range(i % 3)]) for i in range(25)]
    pages, after = [], None
    while True:
        page = gallery.list_identities(limit=10, after=after)
        pages.append(page)
        if len(pages) == 2:
            gallery.create_identity("late arrival")  # created while paging: lands after everything listed
        if page.next_after is None:
            break
        after = page.next_after
    assert [len(p.identities) for p in pages] == [10, 10, 6]
    listed = [i for p in pages for i in p.identities]
    assert [i.name for i in listed] == [c.name for c in created] + ["late arrival"]
    assert [i.face_count for i in listed[:25]] == [i % 3 for i in range(25)]
    assert pages[0].total == 25 and pages[-1].total == 26
    with pytest.raises(InvalidRequest):
        gallery.list_identities(limit=0)


def test_delete_face_and_identity_cascade(gallery):
    rng = np.random.default_rng(3)
    vectors = [rng.standard_normal(MODEL.dimension).astype(np.float32) for _ in range(3)]
    bob = gallery.create_identity("Bob", faces=[face(rng, vector=v) for v in vectors])
    eve = gallery.create_identity("Eve", faces=[face(rng)])
    [[top]] = gallery.search(vectors[0][None], k=1)
    assert (top.name, round(top.similarity, 5)) == ("Bob", 1.0)

    removed = next(f for f in bob.faces)
    gallery.delete_face(removed.id)
    assert gallery.get_identity(bob.id).face_count == 2
    with pytest.raises(NotFound):
        gallery.delete_face(removed.id)

    assert gallery.delete_identity(bob.id) == 2
    with pytest.raises(NotFound):
        gallery.get_identity(bob.id)
    with pytest.raises(NotFound):
        gallery.delete_identity(bob.id)
    with gallery.store.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM gallery_faces WHERE identity_id = ?", (bob.id,)) == (0,)
        assert tx.one("SELECT COUNT(*) FROM gallery_faces") == (1,)
    assert [m.name for m in gallery.search(np.stack(vectors), k=5)[0]] == ["Eve"]
    assert [i.name for i in gallery.list_identities().identities] == ["Eve"] and eve.face_count == 1


def test_search_equals_brute_force(gallery):
    rng = np.random.default_rng(4)
    stored: dict[str, list[np.ndarray]] = {}
    for i in range(60):
        vectors = [rng.standard_normal(MODEL.dimension).astype(np.float32) for _ in range(1 + i % 4)]
        stored[gallery.create_identity(f"id{i}", faces=[face(rng, vector=v) for v in vectors]).id] = vectors
    queries = np.concatenate([rng.standard_normal((20, MODEL.dimension)),
                              [stored[i][0] + 0.1 * rng.standard_normal(MODEL.dimension) for i in list(stored)[:5]]])

    def check(k: int) -> None:
        got = gallery.search(queries, k=k)
        for answer, expected in zip(got, reference_search(stored, queries, k)):
            assert [m.identity_id for m in answer] == [identity for identity, _ in expected]
            np.testing.assert_allclose([m.similarity for m in answer], [s for _, s in expected], atol=1e-5)

    check(5)
    check(100)  # more than there are identities: every identity, ranked
    for identity in list(stored)[::3]:  # removals reach the index too
        gallery.delete_identity(identity)
        del stored[identity]
    check(7)


def test_export_import_round_trip_and_model_version_refusal(gallery, open_gallery, new_store_url, tmp_path):
    rng = np.random.default_rng(5)
    originals = [gallery.create_identity(f"p{i}", {"n": i}, faces=[face(rng, thumbnail=jpeg(30 * i)), face(rng)])
                 for i in range(7)]
    gallery.create_identity("no faces yet")
    exported = tmp_path / "gallery.jsonl"
    assert gallery.export_file(exported) == TransferCounts(8, 14)

    other = open_gallery(url=new_store_url())
    assert other.import_file(exported) == ImportCounts(8, 14, 0, 0)
    assert other.import_file(exported) == ImportCounts(0, 0, 8, 14)  # by id, identical: nothing twice
    for original in originals:
        copy = other.get_identity(original.id)
        assert (copy.name, copy.metadata, copy.created_at) == (original.name, original.metadata, original.created_at)
        assert {(f.id, f.image_sha256, f.box, f.has_thumbnail) for f in copy.faces} == {
            (f.id, f.image_sha256, f.box, f.has_thumbnail) for f in original.faces}
    thumbnail_face = next(f for f in originals[3].faces if f.has_thumbnail)
    assert np.abs(decoded(other.thumbnail(thumbnail_face.id)) - decoded(jpeg(90))).max() <= 8
    queries = rng.standard_normal((10, MODEL.dimension))
    assert gallery.search(queries, k=3) == other.search(queries, k=3)  # bit-exact vectors

    newer = open_gallery(model=EmbeddingModel(MODEL.name, "2", MODEL.dimension), url=new_store_url())
    with pytest.raises(ModelMismatch, match="version '1'.*version '2'") as refused:
        newer.import_file(exported)
    assert refused.value.status == 409
    assert newer.list_identities().total == 0


def test_an_enrolment_through_one_worker_is_found_by_another_within_one_second(open_gallery):
    """Two Gallery objects over two Store objects: two worker processes, or two replicas."""
    rng = np.random.default_rng(6)
    writer, reader = open_gallery(), open_gallery()
    reader.search(rng.standard_normal((1, MODEL.dimension)), k=1)  # the reader's index is loaded (empty)
    latencies = []
    for i in range(5):
        vector = rng.standard_normal(MODEL.dimension).astype(np.float32)
        person = writer.create_identity(f"new {i}", faces=[face(rng, vector=vector)])
        committed = time.monotonic()
        while True:
            matches = reader.search(vector[None], k=1)[0]
            if matches and matches[0].identity_id == person.id:
                break
            assert time.monotonic() - committed < VISIBLE_WITHIN_S, "the other worker did not see the enrolment"
            time.sleep(0.002)
        latencies.append(time.monotonic() - committed)
        assert round(matches[0].similarity, 5) == 1.0
    writer.delete_identity(person.id)
    deleted = time.monotonic()
    while reader.search(vector[None], k=1)[0][0].identity_id == person.id:
        assert time.monotonic() - deleted < VISIBLE_WITHIN_S, "the other worker still finds a deleted identity"
        time.sleep(0.002)
    print(f"visible to the other worker after {1000 * max(latencies):.0f} ms at most "
          f"(median {1000 * sorted(latencies)[2]:.0f} ms)")


ENROL_THEN_WAIT = """
import sys, time, numpy as np
from faceserve.gallery import EmbeddingModel, Gallery, ImportCounts, NewFace, TransferCounts
from faceserve.store import open_store
gallery = Gallery(open_store(sys.argv[1]), EmbeddingModel("test-embedder", "1", 32))
vector = np.arange(1, 33, dtype=np.float32)
person = gallery.create_identity("survivor", faces=[NewFace(vector, "ab" * 32, (1, 2, 3, 4))])
print(person.id, flush=True)
time.sleep(600)
"""


def test_a_committed_enrolment_survives_kill_9(store_url, open_gallery):
    process = subprocess.Popen([sys.executable, "-c", ENROL_THEN_WAIT, store_url], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
    try:
        identity_id = process.stdout.readline().strip()
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert identity_id, "the enrolling process did not report its enrolment"
    gallery = open_gallery()
    survivor = gallery.get_identity(identity_id)
    assert (survivor.name, survivor.face_count) == ("survivor", 1)
    [[match]] = gallery.search(np.arange(1, 33, dtype=np.float32)[None], k=1)
    assert (match.identity_id, round(match.similarity, 5)) == (identity_id, 1.0)


def test_concurrent_enrolments_lose_and_duplicate_nothing(gallery):
    threads, per_thread = 8, 12
    shared = gallery.create_identity("shared")
    vectors: dict[str, np.ndarray] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(threads)

    def enrol(worker: int) -> None:
        rng = np.random.default_rng(100 + worker)
        try:
            start.wait()
            for i in range(per_thread):
                vector = rng.standard_normal(MODEL.dimension).astype(np.float32)
                person = gallery.create_identity(f"w{worker}-{i}", faces=[face(rng, vector=vector)])
                vectors[person.id] = vector
                gallery.add_faces(shared.id, [face(rng)])
                gallery.search(vector[None], k=1)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            failures.append(exc)

    workers = [threading.Thread(target=enrol, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures, failures
    listed = gallery.list_identities(limit=1000).identities
    names = [i.name for i in listed]
    assert len(names) == len(set(names)) == threads * per_thread + 1
    assert set(names) == {f"w{w}-{i}" for w in range(threads) for i in range(per_thread)} | {"shared"}
    assert gallery.get_identity(shared.id).face_count == threads * per_thread
    with gallery.store.read() as tx:
        assert tx.one("SELECT COUNT(*), COUNT(DISTINCT id) FROM gallery_faces") == (2 * threads * per_thread,) * 2
    ids = list(vectors)
    found = gallery.search(np.stack([vectors[i] for i in ids]), k=1)
    assert [answer[0].identity_id for answer in found] == ids


ENROL_MANY = """
import sys, numpy as np
from faceserve.gallery import EmbeddingModel, Gallery, NewFace
from faceserve.store import open_store
gallery = Gallery(open_store(sys.argv[1]), EmbeddingModel("test-embedder", "1", 32))
rng = np.random.default_rng(int(sys.argv[2]))
for i in range(int(sys.argv[3])):
    gallery.create_identity(f"p{sys.argv[2]}-{i}", faces=[NewFace(rng.standard_normal(32), "cd" * 32, (1, 2, 3, 4))])
"""


def test_worker_processes_enrolling_at_once(store_url, open_gallery):
    processes, each = 3, 30
    enrollers = [subprocess.Popen([sys.executable, "-c", ENROL_MANY, store_url, str(p), str(each)], cwd=ROOT)
                 for p in range(processes)]
    assert [process.wait(timeout=120) for process in enrollers] == [0] * processes
    names = [i.name for i in open_gallery().list_identities(limit=1000).identities]
    assert sorted(names) == sorted(f"p{p}-{i}" for p in range(processes) for i in range(each))


def test_postgresql_restart_answers_unavailable_then_recovers(postgres):
    url = postgres.create_database(f"gallery_{uuid.uuid4().hex[:12]}")
    store = open_store(url)
    try:
        gallery = Gallery(store, MODEL)
        rng = np.random.default_rng(7)
        vector = rng.standard_normal(MODEL.dimension).astype(np.float32)
        before = gallery.create_identity("before", faces=[face(rng, vector=vector)])
        assert gallery.search(vector[None], k=1)[0][0].identity_id == before.id
        postgres.stop()
        try:
            with pytest.raises(StoreUnavailable, match="cannot be reached") as outage:
                gallery.create_identity("during")
            assert (outage.value.status, outage.value.code) == (503, "store_unavailable")
            assert outage.value.headers == {"Retry-After": "1"}
            with pytest.raises(StoreUnavailable):
                gallery.list_identities()
            # Searches go on with the faces known before the outage.
            assert gallery.search(vector[None], k=1)[0][0].identity_id == before.id
        finally:
            postgres.start()
        after = gallery.create_identity("after", faces=[face(rng)])  # the same objects, no restart of ours
        assert [i.name for i in gallery.list_identities().identities] == ["before", "after"]
        assert gallery.get_identity(after.id).face_count == 1
        assert gallery.search(vector[None], k=2)[0][0].identity_id == before.id
    finally:
        store.close()
