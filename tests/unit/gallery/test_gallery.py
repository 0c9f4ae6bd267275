"""`faceserve/gallery/gallery.py` over a temporary SQLite store: each operation's stored rows, its audit row, and
the search index following every change (tests/integration/test_gallery_store.py runs the gallery on both
engines, across processes and through outages)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image

from faceserve.errors import FaceserveError, ModelMismatch
from faceserve.gallery import EmbeddingModel, Gallery, NewFace
from faceserve.gallery.migrations import TOPIC
from faceserve.http.caller import Caller
from faceserve.store import open_store

MODEL = EmbeddingModel("test-embedder", "1", 3)
OPS = Caller("10.0.0.7", "ops")
SHA256 = "ab" * 32


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 150, 100)).save(out, "JPEG")
    return out.getvalue()


def new_face(*values: float, thumbnail: bytes | None = None) -> NewFace:
    return NewFace(np.asarray(values, np.float32), SHA256, (1.0, 2.0, 30.0, 40.0), thumbnail)


def query(*values: float) -> np.ndarray:
    return np.asarray([values], np.float32)


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'gallery.db'}"


@pytest.fixture
def open_gallery(store_url):
    """Opens a Gallery (a process's own, with its own index) over the test's store, or another store given."""
    with contextlib.ExitStack() as stores:
        yield lambda url=store_url, model=MODEL: Gallery(stores.enter_context(contextlib.closing(open_store(url))),
                                                         model, poll_interval_s=0)


@pytest.fixture
def gallery(open_gallery) -> Gallery:
    return open_gallery()


def stored(gallery: Gallery) -> dict[str, object]:
    """Everything a change may write: the tables' rows and the change counter."""
    with gallery.store.read() as tx:
        tables = {table: tx.all(f"SELECT * FROM {table} ORDER BY 1") for table in (
            "gallery_identities", "gallery_faces", "gallery_removed_faces", "gallery_audit")}
        tables["counter"] = tx.one("SELECT version FROM store_changes WHERE topic = ?", (TOPIC,))
    return tables


def audited(gallery: Gallery) -> list[tuple]:
    return [(e.operation, e.key_id, e.address, e.identity_ids, e.face_ids, e.identities, e.faces)
            for e in gallery.audit().entries]


def test_create_stores_the_identity_its_faces_and_one_audit_row(gallery):
    ada = gallery.create_identity("Ada", {"team": "x", "desk": 4}, [new_face(1, 0, 0, thumbnail=jpeg(12, 8)),
                                                                    new_face(0, 1, 0)], caller=OPS)
    assert (ada.name, ada.metadata, ada.face_count) == ("Ada", {"team": "x", "desk": 4}, 2)
    assert [(f.identity_id, f.model_name, f.model_version, f.dimension, f.image_sha256, f.box, f.has_thumbnail)
            for f in ada.faces] == [(ada.id, "test-embedder", "1", 3, SHA256, (1, 2, 30, 40), True),
                                    (ada.id, "test-embedder", "1", 3, SHA256, (1, 2, 30, 40), False)]
    assert gallery.get_identity(ada.id) == ada
    thumbnail, none = (gallery.thumbnail(f.id) for f in ada.faces)
    assert (Image.open(io.BytesIO(thumbnail)).format, Image.open(io.BytesIO(thumbnail)).size, none) == (
        "JPEG", (12, 8), None)
    assert audited(gallery) == [("create_identity", "ops", "10.0.0.7", (ada.id,), tuple(f.id for f in ada.faces),
                                 1, 2)]
    answer = ada.answer()
    assert ([f.model for f in answer.faces], answer.faces[0].box.x2) == (["test-embedder:1"] * 2, 30)


def test_refused_changes_store_nothing_and_leave_no_audit_row(gallery):
    ada = gallery.create_identity("Ada", faces=[new_face(1, 0, 0)])
    before = stored(gallery)
    for attempt, status, code in (
            (lambda: gallery.create_identity("", {}), 400, "invalid_request"),
            (lambda: gallery.create_identity("Bob", {"deep": [[[[[1]]]]]}), 400, "metadata_too_deep"),
            (lambda: gallery.create_identity("Bob", {"big": "x" * 5000}), 400, "metadata_too_large"),
            (lambda: gallery.create_identity("Bob", faces=[new_face(1, 0)]), 400, "invalid_request"),
            (lambda: gallery.create_identity("Bob", faces=[new_face(np.nan, 0, 0)]), 400, "invalid_embedding"),
            (lambda: gallery.add_faces(ada.id, []), 400, "invalid_request"),
            (lambda: gallery.add_faces("0190aaaa-0000-7000-8000-000000000000", [new_face(0, 1, 0)]), 404,
             "not_found"),
            (lambda: gallery.delete_face("0190aaaa-0000-7000-8000-000000000000"), 404, "not_found"),
            (lambda: gallery.delete_identity("0190aaaa-0000-7000-8000-000000000000"), 404, "not_found"),
            (lambda: gallery.thumbnail("0190aaaa-0000-7000-8000-000000000000"), 404, "not_found"),
            (lambda: gallery.list_identities(limit=0), 400, "invalid_request"),
            (lambda: gallery.audit(limit=1001), 400, "invalid_request")):
        with pytest.raises(FaceserveError) as refused:
            attempt()
        assert (refused.value.status, refused.value.code) == (status, code)
    assert stored(gallery) == before


def test_list_pages_in_creation_order_with_face_counts_and_metadata_keys_only(gallery):
    made = [gallery.create_identity(name, {"b": 1, "a": {"secret": name}}, [new_face(1, 0, 0)] * count)
            for name, count in (("Ada", 2), ("Bob", 0), ("Cy", 1))]
    first = gallery.list_identities(limit=2)
    assert ([(i.name, i.face_count, i.metadata_keys) for i in first.identities], first.next_after, first.total) == (
        [("Ada", 2, ("a", "b")), ("Bob", 0, ("a", "b"))], made[1].id, 3)
    last = gallery.list_identities(limit=2, after=first.next_after)
    assert ([i.id for i in last.identities], last.next_after, last.total) == ([made[2].id], None, 3)
    assert "secret" not in first.model_dump_json()


def test_add_and_delete_each_audited_and_the_removals_noted_for_other_indexes(gallery):
    ada = gallery.create_identity("Ada", faces=[new_face(1, 0, 0)])
    added = gallery.add_faces(ada.id, [new_face(0, 1, 0), new_face(0, 0, 1)], caller=OPS)
    assert ([f.identity_id for f in added], gallery.get_identity(ada.id).face_count) == ([ada.id] * 2, 3)
    gallery.delete_face(added[0].id, caller=OPS)
    assert [f.id for f in gallery.get_identity(ada.id).faces] == [ada.faces[0].id, added[1].id]
    assert gallery.delete_identity(ada.id) == 2
    with pytest.raises(FaceserveError) as gone:
        gallery.get_identity(ada.id)
    assert gone.value.status == 404
    rows = stored(gallery)
    assert (rows["gallery_identities"], rows["gallery_faces"], rows["counter"]) == ([], [], (4,))
    assert sorted(rows["gallery_removed_faces"]) == sorted(
        [(3, added[0].id), (4, ada.faces[0].id), (4, added[1].id)])
    assert audited(gallery) == [
        ("create_identity", None, "local", (ada.id,), (ada.faces[0].id,), 1, 1),
        ("add_faces", "ops", "10.0.0.7", (ada.id,), tuple(f.id for f in added), 1, 2),
        ("delete_face", "ops", "10.0.0.7", (ada.id,), (added[0].id,), 1, 1),
        ("delete_identity", None, "local", (ada.id,), (ada.faces[0].id, added[1].id), 1, 2)]


def test_the_index_follows_every_change_including_another_gallerys(gallery, open_gallery):
    other = open_gallery()  # another process's gallery over the same store: it learns of changes by polling
    assert other.search(query(1, 0, 0)) == [[]]
    ada = gallery.create_identity("Ada", faces=[new_face(1, 0, 0)])
    bob = gallery.create_identity("Bob", faces=[new_face(0.6, 0.8, 0)])
    for searcher in (gallery, other):
        [matches] = searcher.search(query(2, 0, 0), k=5)  # the query is normalised: only its direction counts
        assert [(m.identity_id, m.name, round(m.similarity, 4)) for m in matches] == [
            (ada.id, "Ada", 1.0), (bob.id, "Bob", 0.6)]
    (bob_face,) = gallery.add_faces(bob.id, [new_face(1, 0.1, 0)])
    assert [[m.name for m in found] for found in other.search(np.concatenate([query(1, 0, 0), query(1, 0.1, 0)]),
                                                             k=1)] == [["Ada"], ["Bob"]]
    gallery.delete_face(bob_face.id)
    other.delete_identity(ada.id)
    assert [m.name for m in gallery.search(query(1, 0, 0), k=5)[0]] == ["Bob"]
    assert [m.name for m in other.search(query(1, 0.1, 0), k=5)[0]] == ["Bob"]
    assert (gallery.index.version, other.index.version, len(gallery.index), len(other.index)) == (5, 5, 1, 1)


def test_search_refuses_vectors_of_another_shape_or_without_a_direction(gallery):
    for vectors, message in ((np.zeros((1, 4), np.float32), "search takes vectors of shape (n, 3), not (1, 4)"),
                             (query(0, 0, 0), "every search vector must be finite and non-zero"),
                             (query(np.inf, 0, 0), "every search vector must be finite and non-zero")):
        with pytest.raises(FaceserveError) as refused:
            gallery.search(vectors)
        assert (refused.value.status, refused.value.message) == (400, message)


def test_an_export_imports_as_it_was_once_and_twice_adds_nothing(gallery, open_gallery, tmp_path):
    ada = gallery.create_identity("Ada", {"team": "x"}, [new_face(1, 0, 0, thumbnail=jpeg(4, 4))])
    gallery.create_identity("Bob")
    exported = io.BytesIO()
    assert (gallery.export_file(exported).identities, gallery.export_file(io.BytesIO()).faces) == (2, 1)
    copy = open_gallery(f"sqlite:///{tmp_path / 'copy.db'}")
    first = copy.import_file(io.BytesIO(exported.getvalue()), caller=OPS)
    again = copy.import_file(io.BytesIO(exported.getvalue()))
    assert (tuple(dataclasses.astuple(first)), again.identities, again.faces, again.identities_present, again.faces_present) == (
        (2, 1, 0, 0), 0, 0, 2, 1)
    assert copy.get_identity(ada.id) == ada
    assert [m.name for m in copy.search(query(1, 0, 0))[0]] == ["Ada"]
    assert [(e[0], e[1], e[5], e[6]) for e in audited(copy)] == [("import", "ops", 2, 1), ("import", None, 0, 0)]
    reexported = io.BytesIO()
    copy.export_file(reexported)
    assert reexported.getvalue().splitlines()[1:] == exported.getvalue().splitlines()[1:]


def test_an_import_refuses_other_content_under_a_stored_id_and_another_model(gallery, open_gallery, tmp_path):
    ada = gallery.create_identity("Ada", faces=[new_face(1, 0, 0)])
    exported = io.BytesIO()
    gallery.export_file(exported)
    header, line = exported.getvalue().splitlines()
    renamed = json.dumps({**json.loads(line), "name": "Eve"}).encode()
    stolen_face = json.dumps({**json.loads(line), "id": "0190aaaa-0000-7000-8000-000000000000"}).encode()
    before = stored(gallery)
    for body, code, message in (
            (renamed, "identity_exists", f"line 2 of the gallery file: identity {ada.id} is in the gallery"),
            (stolen_face, "face_exists", f"line 2 of the gallery file: face {ada.faces[0].id} is in the gallery")):
        with pytest.raises(FaceserveError) as refused:
            gallery.import_file(io.BytesIO(header + b"\n" + body + b"\n"))
        assert (refused.value.status, refused.value.code) == (409, code)
        assert refused.value.message.startswith(message)
    other_model = open_gallery(f"sqlite:///{tmp_path / 'other.db'}", EmbeddingModel("test-embedder", "2", 3))
    with pytest.raises(ModelMismatch):
        other_model.import_file(io.BytesIO(exported.getvalue()))
    assert stored(gallery) == before and other_model.list_identities().total == 0
