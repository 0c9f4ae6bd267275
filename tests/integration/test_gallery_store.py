"""The gallery on both stores, against real databases: SQLite files and a real PostgreSQL server.

Every test of the suite runs on each store; the PostgreSQL server is started once per session
(faceserve/dev/postgres_local.py) and each test gets its own database on it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
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

from faceserve.errors import FaceserveError, InvalidRequest, ModelMismatch, NotFound, StoreUnavailable
from faceserve.gallery import EmbeddingModel, Gallery, ImportCounts, NewFace, ThumbnailFrame, TransferCounts
from faceserve.gallery.migrations import MIGRATIONS
from faceserve.http.caller import Caller
from faceserve.store import open_store
from faceserve.store.base import new_id
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


def test_a_sql_ascii_database_still_answers_text_ids_and_names(postgres):
    """initdb's default in a C locale is SQL_ASCII, where psycopg would give text back as bytes (and send it back
    as bytea, which PostgreSQL refuses to compare with text): the store asks for UTF-8 whatever the database is."""
    name = f"gallery_ascii_{uuid.uuid4().hex[:12]}"
    store = open_store(postgres.create_database(name, encoding="SQL_ASCII"))
    try:
        gallery, rng = Gallery(store, MODEL), np.random.default_rng(9)
        vector = rng.standard_normal(MODEL.dimension).astype(np.float32)
        kept = gallery.create_identity("Zoë", metadata={"team": "ü"}, faces=[face(rng, vector=vector)])
        gallery.delete_identity(gallery.create_identity("gone", faces=[face(rng, vector=vector)]).id)
        [[match]] = gallery.search(vector[None, :], k=5)
        assert (type(match.identity_id), match.identity_id, match.name) == (str, kept.id, "Zoë")
        assert gallery.get_identity(kept.id).metadata == {"team": "ü"}
    finally:
        store.close()
        postgres.drop_database(name)


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


FRAME = ThumbnailFrame(4.0, 16.0, 0.25)  # face((10, 20, 110, 140)) lies at (1.5, 1, 26.5, 31) in a 32x32 thumbnail


def test_a_thumbnail_s_frame_is_stored_answered_exported_and_imported_and_a_version_1_file_still_imports(
        gallery, open_gallery, new_store_url):
    rng = np.random.default_rng(25)
    framed = dataclasses.replace(face(rng, thumbnail=jpeg(70, side=32)), thumbnail_frame=FRAME)
    ada = gallery.create_identity("Ada", faces=[framed, face(rng, thumbnail=jpeg(40)), face(rng)])
    stored = {f.image_sha256: f for f in gallery.get_identity(ada.id).faces}
    frames = [stored[f.image_sha256].thumbnail_frame for f in (framed, *ada.faces[1:])]
    assert frames[0] == FRAME and sorted(map(str, frames[1:])) == ["None", "None"]
    answers = {f.image_sha256: f.answer() for f in stored.values()}
    assert answers[framed.image_sha256].thumbnail_box.model_dump() == {"x1": 1.5, "y1": 1.0, "x2": 26.5, "y2": 31.0}
    assert [a.thumbnail_box for sha, a in answers.items() if sha != framed.image_sha256] == [None, None]

    header, (line,) = exported(gallery)
    assert header["format_version"] == 2
    assert [f.get("thumbnail_frame") for f in line["faces"] if f["image_sha256"] == framed.image_sha256] == [
        {"x1": 4.0, "y1": 16.0, "scale": 0.25}]
    assert sum("thumbnail_frame" in f for f in line["faces"]) == 1
    other = open_gallery(url=new_store_url())
    assert other.import_file(gallery_file(header, [line])) == ImportCounts(1, 3, 0, 0)
    assert other.import_file(gallery_file(header, [line])) == ImportCounts(0, 0, 1, 3)  # the frame is content too
    assert {f.image_sha256: f.thumbnail_frame for f in other.get_identity(ada.id).faces} == {
        sha: f.thumbnail_frame for sha, f in stored.items()}
    moved = {**line, "faces": [{**f, "thumbnail_frame": {"x1": 5.0, "y1": 16.0, "scale": 0.25}}
                               if "thumbnail_frame" in f else f for f in line["faces"]]}
    before = stored_state(other)
    with pytest.raises(FaceserveError) as refused:
        other.import_file(gallery_file(header, [moved]))
    assert (refused.value.status, refused.value.code, stored_state(other)) == (409, "identity_exists", before)

    # A version 1 file (a thumbnail of the box alone, no frame) imports as such; a frame in it is refused.
    legacy = new_line(rng, "legacy")
    legacy["faces"][0]["thumbnail"] = base64.b64encode(jpeg(20)).decode()
    version_1 = {**header, "format_version": 1}
    assert other.import_file(gallery_file(version_1, [legacy])) == ImportCounts(1, 1, 0, 0)
    (legacy_face,) = other.get_identity(legacy["id"]).faces
    assert (legacy_face.has_thumbnail, legacy_face.thumbnail_frame, legacy_face.answer().thumbnail_box) == (
        True, None, None)
    before = stored_state(other)
    stranger = new_line(rng)
    stranger["faces"][0].update(framed_face({"x1": 0, "y1": 0, "scale": 1}))
    with pytest.raises(InvalidRequest) as refused:
        other.import_file(gallery_file(version_1, [stranger]))
    assert (refused.value.code, stored_state(other)) == ("invalid_thumbnail", before)
    assert "format version 2, not 1" in refused.value.message


def test_a_store_of_the_previous_schema_is_migrated_and_its_bare_box_thumbnails_kept_as_they_were(store_url):
    """A gallery stored before thumbnails had frames (schema version 2): its rows read as before, a thumbnail of
    the box alone, and new faces beside them get frames."""
    rng = np.random.default_rng(26)
    store = open_store(store_url)
    try:
        store.migrate("gallery", MIGRATIONS[:2])
        identity_id, face_id, thumbnail = new_id(), new_id(), jpeg(50, side=24)
        with store.transaction() as tx:  # as the previous version wrote them
            version = tx.bump("gallery")
            tx.execute("INSERT INTO gallery_identities (id, name, metadata, created_at) VALUES (?, 'Old', '{}', ?)",
                       (identity_id, "2026-01-01T00:00:00+00:00"))
            tx.execute("INSERT INTO gallery_faces (id, identity_id, model_name, model_version, dimension, vector, "
                       "image_sha256, box_x1, box_y1, box_x2, box_y2, thumbnail, created_at, version) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, 1, 2, 25, 26, ?, ?, ?)",
                       (face_id, identity_id, MODEL.name, MODEL.version, MODEL.dimension,
                        rng.standard_normal(MODEL.dimension).astype("<f4").tobytes(), "cd" * 32, thumbnail,
                        "2026-01-01T00:00:00+00:00", version))
        gallery = Gallery(store, MODEL)
        with store.read() as tx:
            assert tx.all("SELECT version FROM store_migrations WHERE component = 'gallery' ORDER BY version") == [
                (1,), (2,), (3,)]
        gallery.add_faces(identity_id, [dataclasses.replace(face(rng, thumbnail=jpeg(70, side=32)),
                                                            thumbnail_frame=FRAME)])
        old, new = sorted(gallery.get_identity(identity_id).faces, key=lambda f: f.id != face_id)
        assert (old.id, old.box, old.has_thumbnail, old.thumbnail_frame, gallery.thumbnail(face_id)) == (
            face_id, (1.0, 2.0, 25.0, 26.0), True, None, thumbnail)
        assert new.thumbnail_frame == FRAME
        _, (line,) = exported(gallery)
        assert {f["id"]: f.get("thumbnail_frame") for f in line["faces"]} == {
            face_id: None, new.id: {"x1": 4.0, "y1": 16.0, "scale": 0.25}}
    finally:
        store.close()


def test_a_gallery_of_two_models_exports_its_own_model_s_faces_and_never_imports_as_one_model_s(
        gallery, open_gallery, new_store_url, tmp_path):
    """After a model change not yet re-embedded everywhere: each model's export holds its faces only, and says how
    many of the other it left out; a file imports only into a gallery of its model."""
    rng = np.random.default_rng(15)
    newer = EmbeddingModel(MODEL.name, "2", MODEL.dimension)
    both = gallery.create_identity("both models", faces=[face(rng)])
    open_gallery(model=newer).add_faces(both.id, [face(rng), face(rng)])
    only_newer = open_gallery(model=newer).create_identity("only the newer", faces=[face(rng)])
    exported = {}
    for model in (MODEL, newer):
        exported[model] = tmp_path / f"{model.version}.jsonl"
        open_gallery(model=model).export_file(exported[model])
    header, *lines = [json.loads(line) for line in exported[MODEL].read_text().splitlines()]
    assert (header["model"], header["faces_of_other_models"]) == (
        dataclasses.asdict(MODEL), [{**dataclasses.asdict(newer), "faces": 3}])
    assert {line["id"]: len(line["faces"]) for line in lines} == {both.id: 1, only_newer.id: 0}
    header, *lines = [json.loads(line) for line in exported[newer].read_text().splitlines()]
    assert header["faces_of_other_models"] == [{**dataclasses.asdict(MODEL), "faces": 1}]
    assert {line["id"]: len(line["faces"]) for line in lines} == {both.id: 2, only_newer.id: 1}

    fresh = open_gallery(url=new_store_url())
    with pytest.raises(ModelMismatch):
        fresh.import_file(exported[newer])
    assert fresh.list_identities().total == 0
    assert fresh.import_file(exported[MODEL]) == ImportCounts(2, 1, 0, 0)
    with fresh.store.read() as tx:
        assert tx.all("SELECT model_version, COUNT(*) FROM gallery_faces GROUP BY model_version") == [("1", 1)]


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
    # from then on the other worker never finds it, whether or not its index has followed the store yet
    (after,) = reader.search(vector[None], k=1)
    assert len(after) == 1 and after[0].name in {f"new {i}" for i in range(4)}, after  # "new 4" is gone, k kept
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
    [entry] = gallery.audit().entries  # the audit entry was committed with the enrolment
    assert (entry.operation, entry.address, entry.identity_ids, len(entry.face_ids)) == (
        "create_identity", "local", (identity_id,), 1)


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


# ---- issue 20: the import is all or nothing, never merges; bounds; the audit trail --------------------------


TABLES = ("gallery_identities", "gallery_faces", "gallery_removed_faces", "gallery_audit")


def stored_state(gallery: Gallery) -> tuple:
    """What a refused request must leave as it was: the export's sha256 (its header's time left out), every
    gallery table's row count and the change counter."""
    buffer = io.BytesIO()
    gallery.export_file(buffer)
    body = b"\n".join(buffer.getvalue().splitlines()[1:])
    with gallery.store.read() as tx:
        counts = tuple(tx.one(f"SELECT COUNT(*) FROM {table}")[0] for table in TABLES)
    return hashlib.sha256(body).hexdigest(), counts, gallery.store.version("gallery")


def gallery_file(header: dict, lines: list) -> io.BytesIO:
    """A gallery file: each line a dict (written as JSON) or bytes (written as they are)."""
    encoded = [line if isinstance(line, bytes) else json.dumps(line).encode() for line in [header, *lines]]
    return io.BytesIO(b"\n".join(encoded) + b"\n")


def exported(gallery: Gallery) -> tuple[dict, list[dict]]:
    buffer = io.BytesIO()
    gallery.export_file(buffer)
    header, *lines = (json.loads(line) for line in buffer.getvalue().splitlines())
    return header, lines


def new_line(rng: np.random.Generator, name: str = "stranger", faces: int = 1, **fields) -> dict:
    """An identity line nobody has imported: fresh ids, random vectors."""
    return {"id": str(uuid.uuid4()), "name": name, "metadata": {}, "created_at": "2026-01-02T03:04:05+00:00",
            "faces": [{"id": str(uuid.uuid4()), "image_sha256": "ab" * 32, "box": [1, 2, 3, 4],
                       "created_at": "2026-01-02T03:04:05+00:00",
                       "vector": vector_text(rng.standard_normal(MODEL.dimension))}
                      for _ in range(faces)], **fields}


def framed_face(frame) -> dict:
    """A face's thumbnail fields: an 8x8 JPEG and `frame` (None: the frame without the thumbnail)."""
    if frame is None:
        return {"thumbnail_frame": {"x1": 0, "y1": 0, "scale": 1}}
    return {"thumbnail": base64.b64encode(jpeg(60)).decode(), "thumbnail_frame": frame}


def vector_text(values) -> str:
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()


def deep(levels: int) -> bytes:
    return b'{"id": ' + b"[" * levels + b"]" * levels + b"}"


def test_refused_imports_answer_their_code_and_line_and_change_nothing(gallery):
    """Each kind of hostile import (issue 20, findings 1 to 4 and 13): the exact status, code and line, and the
    store exactly as before (export hash, row counts, change counter)."""
    rng = np.random.default_rng(20)
    victim = gallery.create_identity("Victim", {"role": "ceo"}, faces=[face(rng), face(rng, thumbnail=jpeg(9))])
    gallery.create_identity("Bystander", faces=[face(rng)])
    header, lines = exported(gallery)
    victim_line = next(line for line in lines if line["id"] == victim.id)
    good = [new_line(rng, f"good {i}") for i in range(501)]
    stranger = new_line(rng)
    cases = {
        # finding 1: a poison vector (its float32 norm underflows) and other vectors without a unit vector
        "poison vector": ([{**stranger, "faces": [{**stranger["faces"][0], "vector": vector_text(
            np.full(MODEL.dimension, 1e-30))}]}], 400, "invalid_embedding", 2),
        "NaN vector": ([good[0], {**stranger, "faces": [{**stranger["faces"][0], "vector": vector_text(
            np.r_[np.ones(MODEL.dimension - 1), np.nan])}]}], 400, "invalid_embedding", 3),
        "huge vector": ([{**stranger, "faces": [{**stranger["faces"][0], "vector": vector_text(
            np.full(MODEL.dimension, 1e30))}]}], 400, "invalid_embedding", 2),
        # finding 2: an existing id with other content is never merged into
        "hijack: the victim's id, a stranger's face": (
            [{**stranger, "id": victim.id, "name": "ignored"}], 409, "identity_exists", 2),
        "hijack: the victim's line plus a face": (
            [good[0], {**victim_line, "faces": victim_line["faces"] + stranger["faces"]}], 409, "identity_exists", 3),
        "the victim's line, renamed": ([{**victim_line, "name": "Someone else"}], 409, "identity_exists", 2),
        "the victim's line, other metadata": ([{**victim_line, "metadata": {"role": "intern"}}], 409,
                                              "identity_exists", 2),
        "the victim's line, one face less": ([{**victim_line, "faces": victim_line["faces"][:1]}], 409,
                                             "identity_exists", 2),
        "a new identity claiming the victim's face": (
            [{**stranger, "faces": [{**stranger["faces"][0], "id": victim_line["faces"][0]["id"]}]}], 409,
            "face_exists", 2),
        # finding 3: 501 good lines, then a lone surrogate: nothing of the 501 is written
        "501 good lines then a lone surrogate in a name": ([*good, {**stranger, "name": "Eve\ud800"}], 400,
                                                           "invalid_text", 503),
        "a lone surrogate in a metadata key": ([{**stranger, "metadata": {"\udc80": 1}}], 400, "invalid_text", 2),
        "a lone surrogate in a metadata value": ([{**stranger, "metadata": {"k": "\ud800"}}], 400, "invalid_text", 2),
        "a NUL in a name": ([{**stranger, "name": "Eve\x00"}], 400, "invalid_text", 2),
        # finding 4: malformed lines
        "faces a string": ([{**stranger, "faces": "abc"}], 400, "invalid_request", 2),
        "faces [1]": ([{**stranger, "faces": [1]}], 400, "invalid_request", 2),
        "faces {}": ([{**stranger, "faces": {}}], 400, "invalid_request", 2),
        "faces [null]": ([{**stranger, "faces": [None]}], 400, "invalid_request", 2),
        "no faces": ([{key: value for key, value in stranger.items() if key != "faces"}], 400, "invalid_request", 2),
        "a line 5000 deep": ([good[0], deep(5000)], 400, "too_deep", 3),
        "a line 100000 deep": ([deep(100_000)], 400, "too_deep", 2),
        "a list, not an object": ([[1, 2]], 400, "invalid_request", 2),
        "not JSON": ([b"{nope"], 400, "invalid_request", 2),
        "not UTF-8": ([b'{"name": "\xff\xfe"}'], 400, "invalid_request", 2),
        "a box of text": ([{**stranger, "faces": [{**stranger["faces"][0], "box": "1,2,3,4"}]}], 400,
                          "invalid_request", 2),
        "a vector of 3 bytes": ([{**stranger, "faces": [{**stranger["faces"][0], "vector": "AAAA"}]}], 400,
                                "invalid_request", 2),
        # bounds
        "metadata of 5000 bytes": ([{**stranger, "metadata": {"x": "y" * 5000}}], 400, "metadata_too_large", 2),
        "metadata 5 levels deep": ([{**stranger, "metadata": {"a": {"b": {"c": {"d": {}}}}}}], 400,
                                   "metadata_too_deep", 2),
        "a name of 201 characters": ([{**stranger, "name": "x" * 201}], 400, "name_too_long", 2),
        # finding 11: thumbnails are images, re-encoded, or refused
        "a thumbnail that is HTML": ([{**stranger, "faces": [{**stranger["faces"][0], "thumbnail": base64.b64encode(
            b"<script>alert(1)</script>").decode()}]}], 400, "invalid_thumbnail", 2),
        # a thumbnail's frame: exactly {x1, y1, scale}, finite, never enlarging, the box on the thumbnail, with its
        # thumbnail, in a version 2 file
        **{f"a thumbnail frame {what}": ([{**stranger, "faces": [{**stranger["faces"][0], **framed_face(frame)}]}],
                                         400, "invalid_thumbnail", 2) for what, frame in {
            "without its thumbnail": None, "of text": "0,0,1", "missing its scale": {"x1": 0, "y1": 0},
            "with another key": {"x1": 0, "y1": 0, "scale": 1, "angle": 0},
            "that enlarges": {"x1": 0, "y1": 0, "scale": 2}, "of scale 0": {"x1": 0, "y1": 0, "scale": 0},
            "of scale true": {"x1": 0, "y1": 0, "scale": True}, "of NaN": {"x1": float("nan"), "y1": 0, "scale": 1},
            "of an integer beyond float": {"x1": 10 ** 400, "y1": 0, "scale": 1},
            "of a string": {"x1": "0", "y1": 0, "scale": 1},
            "putting the box off the thumbnail": {"x1": 50, "y1": 2, "scale": 1}}.items()},
        # finding 13: duplicated ids in one file
        "an identity id twice": ([good[0], good[1], {**stranger, "id": good[0]["id"]}], 400, "duplicate_id", 4),
        "a face id on two lines": ([good[0], {**stranger, "faces": good[0]["faces"]}], 400, "duplicate_id", 3),
        "a face id twice in a line": ([{**stranger, "faces": stranger["faces"] * 2}], 400, "duplicate_id", 2),
    }
    before = stored_state(gallery)
    for case, (file_lines, status, code, line) in cases.items():
        with pytest.raises(FaceserveError) as refused:
            gallery.import_file(gallery_file(header, file_lines))
        assert (refused.value.status, refused.value.code) == (status, code), f"{case}: {refused.value.message}"
        assert f"line {line} " in refused.value.message or f"and {line} " in refused.value.message, \
            f"{case}: {refused.value.message}"
        assert stored_state(gallery) == before, f"{case} changed the store"
    assert "lines 2 and 4" in _message(gallery, header, [good[0], good[1], {**stranger, "id": good[0]["id"]}])

    headers = {"model a string": {**header, "model": "faceres"}, "model a list": {**header, "model": [1]},
               "no format": {"model": header["model"]}, "format version 3": {**header, "format_version": 3},
               "format version 2.0": {**header, "format_version": 2.0}, "format version true": {
                   **header, "format_version": True}}
    for case, bad_header in headers.items():
        with pytest.raises(InvalidRequest) as refused:
            gallery.import_file(gallery_file(bad_header, [stranger]))
        assert refused.value.code == "invalid_request", case
    with pytest.raises(ModelMismatch):
        gallery.import_file(gallery_file({**header, "model": {**header["model"], "dimension": 31}}, [stranger]))
    with pytest.raises(InvalidRequest):
        gallery.import_file(io.BytesIO(deep(5000)))  # the header line itself
    assert stored_state(gallery) == before


def _message(gallery: Gallery, header: dict, lines: list) -> str:
    with pytest.raises(FaceserveError) as refused:
        gallery.import_file(gallery_file(header, lines))
    return refused.value.message


def test_an_import_counts_exactly_what_it_added_and_what_was_present(gallery, open_gallery, new_store_url):
    rng = np.random.default_rng(21)
    source = open_gallery(url=new_store_url())
    kept = [source.create_identity(f"kept {i}", {"i": i}, faces=[face(rng) for _ in range(i)]) for i in range(4)]
    header, lines = exported(source)
    assert gallery.import_file(gallery_file(header, lines[:2])) == ImportCounts(2, 1, 0, 0)  # kept 0 and kept 1
    fresh = new_line(rng, "fresh", faces=3)
    counts = gallery.import_file(gallery_file(header, [*lines, fresh]), caller=Caller("10.1.2.3", "ops"))
    assert counts == ImportCounts(identities=3, faces=2 + 3 + 3, identities_present=2, faces_present=1)
    assert {i.name: i.face_count for i in gallery.list_identities().identities} == {
        "kept 0": 0, "kept 1": 1, "kept 2": 2, "kept 3": 3, "fresh": 3}
    entries = gallery.audit().entries
    assert [(e.operation, e.key_id, e.address) for e in entries] == [("import", None, "local"),
                                                                     ("import", "ops", "10.1.2.3")]
    assert set(entries[1].identity_ids) == {kept[2].id, kept[3].id, fresh["id"]}
    assert len(entries[1].face_ids) == 8 and set(entries[1].face_ids) >= {f["id"] for f in fresh["faces"]}
    assert gallery.import_file(gallery_file(header, [*lines, fresh])) == ImportCounts(0, 0, 5, 9)
    assert len(gallery.audit().entries) == 3  # an import adding nothing is recorded too: someone tried


def test_two_concurrent_imports_of_one_file_add_it_once(open_gallery, store_url):
    rng = np.random.default_rng(22)
    header = {"format": "faceserve-gallery", "format_version": 1, "model": dataclasses.asdict(MODEL)}
    lines = [new_line(rng, f"p{i}", faces=2) for i in range(200)]
    results: list = []
    galleries = [open_gallery(), open_gallery()]  # two processes or replicas
    importers = [threading.Thread(target=lambda g=g: results.append(g.import_file(gallery_file(header, lines))))
                 for g in galleries]
    for importer in importers:
        importer.start()
    for importer in importers:
        importer.join()
    assert sorted(results, key=lambda c: c.identities) == [ImportCounts(0, 0, 200, 400), ImportCounts(200, 400, 0, 0)]


def test_a_vector_stored_before_the_checks_never_hides_its_identity(gallery):
    """Finding 1 on a gallery poisoned before the fix: the poisoned face matches nothing, the identity's other
    faces still match, and no similarity is NaN."""
    rng = np.random.default_rng(23)
    vector = rng.standard_normal(MODEL.dimension).astype(np.float32)
    victim = gallery.create_identity("Victim", faces=[face(rng, vector=vector)])
    with gallery.store.transaction() as tx:  # as a pre-fix import stored it
        version = tx.bump("gallery")
        tx.execute("INSERT INTO gallery_faces (id, identity_id, model_name, model_version, dimension, vector, "
                   "image_sha256, box_x1, box_y1, box_x2, box_y2, thumbnail, created_at, version) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, 1, 2, 3, 4, NULL, ?, ?)",
                   (str(uuid.uuid4()), victim.id, MODEL.name, MODEL.version, MODEL.dimension,
                    np.full(MODEL.dimension, 1e-30, "<f4").tobytes(), "ab" * 32, "2026-01-01T00:00:00+00:00", version))
    gallery.index.mark_stale()
    [[match]] = gallery.search(vector[None], k=3)
    assert (match.identity_id, round(match.similarity, 5)) == (victim.id, 1.0)
    other = gallery.search(rng.standard_normal((20, MODEL.dimension)), k=3)
    assert all(np.isfinite(m.similarity) for matches in other for m in matches)


def test_metadata_is_bounded_and_list_pages_carry_its_keys_only(gallery):
    rng = np.random.default_rng(24)
    ada = gallery.create_identity("Ada", {"team": "x", "notes": "n" * 3000}, faces=[face(rng)])
    before = stored_state(gallery)
    for metadata, code in (({"x": "y" * 5000}, "metadata_too_large"), ({"k": "\ud800"}, "invalid_text"),
                           ({"a": {"b": {"c": {"d": {}}}}}, "metadata_too_deep")):
        with pytest.raises(InvalidRequest) as refused:
            gallery.create_identity("Eve", metadata)
        assert refused.value.code == code
    with pytest.raises(InvalidRequest) as refused:
        gallery.create_identity("E\udfffve")
    assert refused.value.code == "invalid_text"
    assert stored_state(gallery) == before
    with gallery.store.transaction() as tx:  # a row stored before the bound: 1 MB of metadata
        # Its id is made as the store makes ids (a UUIDv7 after Ada's): a uuid4 would sort before Ada's at random.
        tx.execute("INSERT INTO gallery_identities (id, name, metadata, created_at) VALUES (?, ?, ?, ?)",
                   (new_id(), "Legacy", json.dumps({"blob": "z" * 1_000_000}), "2026-01-01T00:00:00+00:00"))
    page = gallery.list_identities()
    assert [(i.name, i.metadata_keys) for i in page.identities] == [("Ada", ("notes", "team")), ("Legacy", ())]
    assert gallery.get_identity(ada.id).metadata == {"team": "x", "notes": "n" * 3000}


def test_every_change_is_audited_in_its_own_transaction(gallery):
    rng = np.random.default_rng(25)
    ops, web = Caller("10.0.0.7", "ops"), Caller("192.0.2.1")
    ada = gallery.create_identity("Ada", faces=[face(rng)], caller=ops)
    added = gallery.add_faces(ada.id, [face(rng), face(rng)], caller=web)
    gallery.delete_face(added[0].id, caller=web)
    bob = gallery.create_identity("Bob")
    before = stored_state(gallery)
    for refused in (lambda: gallery.add_faces(str(uuid.uuid4()), [face(rng)], caller=web),
                    lambda: gallery.delete_face(added[0].id, caller=web),
                    lambda: gallery.create_identity("x" * 300, caller=web),
                    lambda: gallery.add_faces(ada.id, [face(rng, vector=np.zeros(MODEL.dimension, np.float32))])):
        with pytest.raises((NotFound, InvalidRequest)):
            refused()
    assert stored_state(gallery) == before  # a refused change leaves no audit entry either
    assert gallery.delete_identity(ada.id, caller=ops) == 2
    entries = gallery.audit().entries
    assert [(e.operation, e.key_id, e.address, e.identity_ids, len(e.face_ids)) for e in entries] == [
        ("create_identity", "ops", "10.0.0.7", (ada.id,), 1),
        ("add_faces", None, "192.0.2.1", (ada.id,), 2),
        ("delete_face", None, "192.0.2.1", (ada.id,), 1),
        ("create_identity", None, "local", (bob.id,), 0),
        ("delete_identity", "ops", "10.0.0.7", (ada.id,), 2)]
    assert entries[1].face_ids == tuple(f.id for f in added) and entries[2].face_ids == (added[0].id,)
    assert set(entries[4].face_ids) == {ada.faces[0].id, added[1].id}
    assert entries == tuple(sorted(entries, key=lambda e: e.at))
    first = gallery.audit(limit=2)
    second = gallery.audit(limit=2, after=first.next_after)
    third = gallery.audit(limit=2, after=second.next_after)
    assert first.entries + second.entries + third.entries == entries and third.next_after is None
    with pytest.raises(InvalidRequest):
        gallery.audit(limit=0)
