"""The approximate path of the gallery's search (`faceserve/gallery/ann.py` through `index.py`) over temporary SQLite
stores: the same top-1 as exact search on a gallery made from real embeddings, the saved index a worker starts
from (used when it can be caught up, ignored and rebuilt when it is of an old counter, another store or damaged),
and removed faces never answered."""

from __future__ import annotations

import contextlib
import json
import logging

import numpy as np
import pytest

from faceserve.gallery import EmbeddingModel, Gallery, NewFace
from faceserve.store import open_store

MODEL = EmbeddingModel("test-embedder", "1", 64)
SHA256 = "ab" * 32


@pytest.fixture
def open_gallery(tmp_path):
    """Opens a Gallery (a process's own index) over the test's store or another; approximate from 200 faces on."""
    with contextlib.ExitStack() as stores:
        def opened(name="gallery.db", exact_below=200, **options) -> Gallery:
            store = stores.enter_context(contextlib.closing(open_store(f"sqlite:///{tmp_path / name}")))
            return Gallery(store, options.pop("model", MODEL), poll_interval_s=0, exact_below=exact_below,
                           index_dir=tmp_path / "index", **options)
        yield opened


def vectors(count: int, seed: int = 0, dimension: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)


def enrol(gallery: Gallery, faces: np.ndarray, prefix: str = "p") -> list[str]:
    """One identity per row, named prefix + row; their ids."""
    return [gallery.create_identity(f"{prefix}{i}", faces=[NewFace(v, SHA256, (0, 0, 1, 1))]).id
            for i, v in enumerate(faces)]


def top1(gallery: Gallery, queries: np.ndarray) -> list[str]:
    return [matches[0].identity_id for matches in gallery.search(queries, 5)]


def saved_versions(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "index" / "test-embedder-1-64").iterdir() if p.name.isdigit())


def test_the_approximate_path_gives_exact_searchs_top1_on_a_gallery_of_real_embeddings(repository, fixtures,
                                                                                      tmp_path):
    from benchmarks import search

    real = search.real_embeddings()
    url = f"sqlite:///{tmp_path / 'faces.db'}"
    probes = search.fill_store(url, real, 3000)
    probes = np.concatenate([probes, real])  # and the real faces themselves, each near a cluster of lookalikes
    model = EmbeddingModel("faceres", "1", real.shape[1])
    with open_store(url) as store:
        exact = Gallery(store, model, exact_below=10**9, index_dir=tmp_path / "index").search(probes, 5)
        approximate = Gallery(store, model, exact_below=1000, index_dir=tmp_path / "index")
        found = approximate.search(probes, 5)
        assert approximate.index.saved is not None and len(approximate.index.saved) == 3000
    assert [m[0].identity_id for m in found] == [m[0].identity_id for m in exact]
    assert max(abs(a[0].similarity - e[0].similarity) for a, e in zip(found, exact)) < 1e-3  # float16 vectors


def test_below_the_bound_search_is_exact_and_saves_nothing(open_gallery, tmp_path):
    gallery = open_gallery(exact_below=200)
    enrol(gallery, vectors(199))
    assert len(gallery.search(vectors(1, seed=5), 3)[0]) == 3
    assert (gallery.index.saved, (tmp_path / "index").exists()) == (None, False)


def test_a_worker_starts_from_the_saved_index_and_catches_up_with_the_changes_since(open_gallery, tmp_path):
    faces = vectors(300)
    first = open_gallery()
    ids = enrol(first, faces)
    assert top1(first, faces[:3]) == ids[:3]
    (tag,) = saved_versions(tmp_path)
    assert first.index.saved.tag.version == int(tag) == 300  # built when the gallery passed 200 faces
    late = enrol(first, vectors(2, seed=9), prefix="late")
    first.delete_identity(ids[0])
    second = open_gallery()
    assert top1(second, np.concatenate([faces[:2], vectors(2, seed=9)]))[1:] == [ids[1], *late]
    assert second.index.saved.folder == first.index.saved.folder  # the same files, memory-mapped: not rebuilt
    assert ids[0] not in {m.identity_id for m in second.search(faces[:1], 50)[0]}
    assert len(second.index) == 301


def test_a_saved_index_of_a_counter_the_store_cannot_catch_up_from_is_not_used(open_gallery, tmp_path, monkeypatch,
                                                                              caplog):
    import faceserve.gallery.index as index_module

    first = open_gallery()
    ids = enrol(first, vectors(300))
    first.search(vectors(1), 1)
    assert saved_versions(tmp_path) == ["300"]
    monkeypatch.setattr(index_module, "REMOVALS_KEPT", 2)
    first.delete_identity(ids[0])
    first.delete_identity(ids[1])
    first.delete_identity(ids[2])  # three changes past the saved index: its removals may be forgotten
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.ann"):
        second = open_gallery()
        second.search(vectors(1), 1)
    assert "is at change 300, the store at 303; not used" in caplog.text
    assert (second.index.saved.tag.version, second.index.saved.faces, saved_versions(tmp_path)) == (303, 297, ["303"])


def test_a_saved_index_ahead_of_the_store_or_of_another_store_is_not_used(open_gallery, tmp_path, caplog):
    import sqlite3

    first = open_gallery(rebuild_after=1)
    enrol(first, vectors(250))
    first.search(vectors(1), 1)
    with contextlib.closing(sqlite3.connect(tmp_path / "gallery.db")) as live, \
            contextlib.closing(sqlite3.connect(tmp_path / "restored.db")) as copy:
        live.backup(copy)  # a backup at change 250
    late = enrol(first, vectors(2, seed=3), prefix="after-backup")
    assert top1(first, vectors(2, seed=3)) == late and first.index.saved.tag.version == 252  # rebuilt: 2 > 1
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.ann"):
        restored = open_gallery(name="restored.db")  # the backup restored: the index of change 252 is ahead of it
        assert set(top1(restored, vectors(2, seed=3))).isdisjoint(late)
    assert "is at change 252, the store at 250; not used" in caplog.text
    assert (restored.index.saved.tag.version, len(restored.index.saved)) == (250, 250)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.ann"):
        other = open_gallery(name="other.db")  # another store past the saved index's counter
        other_ids = enrol(other, vectors(260, seed=4), prefix="other")
        assert top1(other, vectors(260, seed=4)[:5]) == other_ids[:5]
    assert "is of another store, model or format; not used" in caplog.text
    assert (other.index.saved.tag.version, other.index.saved.tag.store != restored.index.saved.tag.store) == (260, True)


def test_a_damaged_saved_index_is_ignored_and_rebuilt(open_gallery, tmp_path, caplog):
    faces = vectors(300)
    first = open_gallery()
    ids = enrol(first, faces)
    first.search(faces[:1], 1)
    folder = first.index.saved.folder
    graph = folder / "index.usearch"
    damaged = bytearray(graph.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    graph.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="faceserve.gallery.ann"):
        second = open_gallery()
        assert top1(second, faces[:5]) == ids[:5]
    assert "index.usearch differs from its manifest (damaged); not used" in caplog.text
    manifest = json.loads((second.index.saved.folder / "manifest.json").read_text())
    assert (manifest["version"], manifest["faces"]) == (300, 300)
    (second.index.saved.folder / "manifest.json").write_text("{not json")
    third = open_gallery()
    assert top1(third, faces[:5]) == ids[:5] and third.index.saved is not None


def test_removed_faces_are_never_answered_before_or_after_a_rebuild(open_gallery, tmp_path):
    faces = vectors(400)
    gallery = open_gallery(rebuild_after=50)
    ids = enrol(gallery, faces)
    gallery.search(faces[:1], 1)
    built = gallery.index.saved.tag.version
    gone = set(ids[:40])
    for identity_id in ids[:40]:
        gallery.delete_identity(identity_id)
    for searcher in (gallery, open_gallery(rebuild_after=50)):  # this process's index and a new worker's
        answered = {m.identity_id for matches in searcher.search(faces[:40], 20) for m in matches}
        assert answered and not answered & gone
        assert searcher.index.saved.tag.version == built  # 40 changes beside it: under the bound
    for identity_id in ids[40:55]:
        gallery.delete_identity(identity_id)
    gone |= set(ids[40:55])
    answered = {m.identity_id for matches in gallery.search(faces[:55], 20) for m in matches}
    # Made from the last one: its graph less the 55 removed faces (their rows stay, never answered).
    assert (gallery.index.saved.tag.version, gallery.index.saved.faces, len(gallery.index.saved)) == (455, 345, 400)
    assert answered and not answered & gone
    new_faces = vectors(60, seed=11)
    new_ids = enrol(gallery, new_faces, prefix="new")
    assert top1(gallery, new_faces) == new_ids
    assert (gallery.index.saved.faces, len(gallery.index.saved), len(gallery.index)) == (405, 460, 405)
    assert top1(open_gallery(), new_faces[:3]) == new_ids[:3]  # a new worker starts from the same saved index


def test_a_folder_that_cannot_be_written_leaves_search_exact(open_gallery, tmp_path, caplog):
    (tmp_path / "index").write_text("a file where the folder should be")
    faces = vectors(250)
    gallery = open_gallery()
    with caplog.at_level(logging.WARNING, logger="faceserve.gallery.index"):
        ids = enrol(gallery, faces)
        assert top1(gallery, faces[:5]) == ids[:5]
        enrol(gallery, vectors(1, seed=2))
        assert len(gallery.search(faces[:1], 3)[0]) == 3
    assert caplog.text.count("cannot save an index in") == 1
    assert (gallery.index.saved, len(gallery.index)) == (None, 251)
