"""The approximate path of the gallery's search (`faceserve/gallery/ann.py` through `index.py`) over temporary SQLite
stores: the same top-1 as exact search on a gallery made from real embeddings, the saved index a worker starts
from (used when it can be caught up, ignored and rebuilt when it is of an old counter, another store or damaged),
removed faces never answered, and the build in the background: searches during it (held open by `HeldBuild`, on
both engines), its swap, a failed build, a stop, one build per machine, a reload during a build."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time

import numpy as np
import pytest

from faceserve.gallery import EmbeddingModel, Gallery, NewFace
from faceserve.store import open_store

MODEL = EmbeddingModel("test-embedder", "1", 64)
SHA256 = "ab" * 32
MODEL_FOLDER = "test-embedder-1-64"


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


def built(gallery: Gallery) -> Gallery:
    """The gallery once its index has followed the store and the build that started then (if any, and any it
    chained) has ended."""
    gallery.index.sync()
    assert gallery.index.wait_for_build(timeout_s=60)
    return gallery


def top1(gallery: Gallery, queries: np.ndarray) -> list[str]:
    return [matches[0].identity_id for matches in gallery.search(queries, 5)]


def saved_versions(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "index" / MODEL_FOLDER).iterdir() if p.name.isdigit())


def test_the_approximate_path_gives_exact_searchs_top1_on_a_gallery_of_real_embeddings(repository, fixtures,
                                                                                      tmp_path):
    from benchmarks import search

    real, served = search.real_embeddings()
    url = f"sqlite:///{tmp_path / 'faces.db'}"
    probes, _ = search.fill_store(url, real, 3000, served, probes=300)
    probes = np.concatenate([probes, real])  # and the real faces themselves, each near a cluster of lookalikes
    model = EmbeddingModel(*served, real.shape[1])
    with open_store(url) as store:
        exact = Gallery(store, model, exact_below=10**9, index_dir=tmp_path / "index").search(probes, 5)
        approximate = built(Gallery(store, model, exact_below=1000, index_dir=tmp_path / "index"))
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
    assert top1(first, faces[:3]) == ids[:3]  # exact while the index is built
    built(first)
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
    built(first)
    assert saved_versions(tmp_path) == ["300"]
    monkeypatch.setattr(index_module, "REMOVALS_KEPT", 2)
    first.delete_identity(ids[0])
    first.delete_identity(ids[1])
    first.delete_identity(ids[2])  # three changes past the saved index: its removals may be forgotten
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.ann"):
        second = built(open_gallery())
    assert "is at change 300, the store at 303; not used" in caplog.text
    assert (second.index.saved.tag.version, second.index.saved.faces, saved_versions(tmp_path)) == (303, 297, ["303"])


def test_a_saved_index_ahead_of_the_store_or_of_another_store_is_not_used(open_gallery, tmp_path, caplog):
    import sqlite3

    first = open_gallery(rebuild_after=1)
    enrol(first, vectors(250))
    built(first)
    with contextlib.closing(sqlite3.connect(tmp_path / "gallery.db")) as live, \
            contextlib.closing(sqlite3.connect(tmp_path / "restored.db")) as copy:
        live.backup(copy)  # a backup at change 250
    late = enrol(first, vectors(2, seed=3), prefix="after-backup")
    assert top1(first, vectors(2, seed=3)) == late
    assert built(first).index.saved.tag.version == 252  # rebuilt: 2 > 1
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.ann"):
        restored = open_gallery(name="restored.db")  # the backup restored: the index of change 252 is ahead of it
        assert set(top1(restored, vectors(2, seed=3))).isdisjoint(late)
        built(restored)
    assert "is at change 252, the store at 250; not used" in caplog.text
    assert (restored.index.saved.tag.version, len(restored.index.saved)) == (250, 250)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.ann"):
        other = open_gallery(name="other.db")  # another store past the saved index's counter
        other_ids = enrol(other, vectors(260, seed=4), prefix="other")
        assert top1(other, vectors(260, seed=4)[:5]) == other_ids[:5]
        built(other)
    assert "is of another store, model or format; not used" in caplog.text
    assert (other.index.saved.tag.version, other.index.saved.tag.store != restored.index.saved.tag.store) == (260, True)


def test_a_damaged_saved_index_is_ignored_and_rebuilt(open_gallery, tmp_path, caplog):
    faces = vectors(300)
    first = open_gallery()
    ids = enrol(first, faces)
    folder = built(first).index.saved.folder
    graph = folder / "index.usearch"
    damaged = bytearray(graph.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    graph.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="faceserve.gallery.ann"):
        second = open_gallery()
        assert top1(second, faces[:5]) == ids[:5]
        built(second)
    assert "index.usearch differs from its manifest (damaged); not used" in caplog.text
    manifest = json.loads((second.index.saved.folder / "manifest.json").read_text())
    assert (manifest["version"], manifest["faces"]) == (300, 300)
    (second.index.saved.folder / "manifest.json").write_text("{not json")
    third = open_gallery()
    assert top1(third, faces[:5]) == ids[:5] and built(third).index.saved is not None


def test_removed_faces_are_never_answered_before_or_after_a_rebuild(open_gallery, tmp_path):
    faces = vectors(400)
    gallery = open_gallery(rebuild_after=50)
    ids = enrol(gallery, faces)
    first_build = built(gallery).index.saved.tag.version
    gone = set(ids[:40])
    for identity_id in ids[:40]:
        gallery.delete_identity(identity_id)
    for searcher in (gallery, open_gallery(rebuild_after=50)):  # this process's index and a new worker's
        answered = {m.identity_id for matches in searcher.search(faces[:40], 20) for m in matches}
        assert answered and not answered & gone
        assert (searcher.index.saved.tag.version, searcher.index.building) == (first_build, False)  # 40 < 50
    for identity_id in ids[40:55]:
        gallery.delete_identity(identity_id)
    gone |= set(ids[40:55])
    answered = {m.identity_id for matches in gallery.search(faces[:55], 20) for m in matches}  # during the build
    assert answered and not answered & gone
    built(gallery)
    answered = {m.identity_id for matches in gallery.search(faces[:55], 20) for m in matches}
    # Made from the last one: its graph less the 55 removed faces (their rows stay, never answered).
    assert (gallery.index.saved.tag.version, gallery.index.saved.faces, len(gallery.index.saved)) == (455, 345, 400)
    assert answered and not answered & gone
    new_faces = vectors(60, seed=11)
    new_ids = enrol(gallery, new_faces, prefix="new")
    assert top1(gallery, new_faces) == new_ids
    built(gallery)
    assert (gallery.index.saved.faces, len(gallery.index.saved), len(gallery.index)) == (405, 460, 405)
    assert top1(open_gallery(), new_faces[:3]) == new_ids[:3]  # a new worker starts from the same saved index


def test_a_folder_that_cannot_be_written_leaves_search_exact(open_gallery, tmp_path, caplog):
    (tmp_path / "index").write_text("a file where the folder should be")
    faces = vectors(250)
    gallery = open_gallery()
    with caplog.at_level(logging.WARNING, logger="faceserve.gallery.index"):
        ids = enrol(gallery, faces)
        assert top1(gallery, faces[:5]) == ids[:5]
        built(gallery)
        enrol(gallery, vectors(1, seed=2))
        assert len(gallery.search(faces[:1], 3)[0]) == 3
        built(gallery)  # not tried again before its retry delay
    assert caplog.text.count("cannot save an index in") == 1
    assert (gallery.index.saved, len(gallery.index)) == (None, 251)


@pytest.fixture
def held_build(monkeypatch):
    """A HeldBuild in place of `ann.build`, released at the end (before the galleries close)."""
    hold = HeldBuild(monkeypatch)
    yield hold
    hold.release.set()


class HeldBuild:
    """Stands in for `ann.build`: reads every face the build is given, then waits until `release` before the real
    build, so a test acts while a build is under way; `fail` set: raises it instead of building."""

    def __init__(self, monkeypatch):
        from faceserve.gallery import ann

        self.real, self.calls, self.fail = ann.build, 0, None
        self.holding, self.release = threading.Event(), threading.Event()
        monkeypatch.setattr(ann, "build", self)

    def __call__(self, parent, tag, faces, *args, **kwargs):
        self.calls += 1
        faces = list(faces)  # read before the changes made during the hold
        self.holding.set()
        assert self.release.wait(60)
        if self.fail is not None:
            raise self.fail
        return self.real(parent, tag, faces, *args, **kwargs)


@pytest.fixture
def gallery_each_engine(store_url_each_engine, tmp_path):
    """Opens Galleries over one store of each engine, approximate from 200 faces on; closed at the end."""
    with contextlib.ExitStack() as opened:
        store = opened.enter_context(contextlib.closing(open_store(store_url_each_engine)))

        def open_one(**options) -> Gallery:
            gallery = Gallery(store, MODEL, poll_interval_s=0, exact_below=200, index_dir=tmp_path / "index",
                              **options)
            opened.callback(gallery.close)
            return gallery
        yield open_one


def nearest_face_ids(gallery: Gallery, faces: np.ndarray) -> list[str]:
    """The face id the saved index's graph holds nearest to each vector."""
    saved = gallery.index.saved
    rows, _ = saved.search(faces / np.linalg.norm(faces, axis=1, keepdims=True), 1)
    return [saved.face_ids[row].decode() for row in rows[:, 0]]


def test_searches_during_a_build_answer_exactly_with_the_changes_made_meanwhile(gallery_each_engine, held_build):
    hold = held_build
    gallery = gallery_each_engine(rebuild_after=5)
    faces = vectors(300)
    ids = enrol(gallery, faces)
    assert top1(gallery, faces[:20]) == ids[:20]  # exact; the build starts in the background
    assert hold.holding.wait(30) and gallery.index.building and gallery.index.saved is None
    added = vectors(4, seed=21)
    added_ids = enrol(gallery, added, prefix="during")
    deleted_faces = [gallery.get_identity(identity_id).faces[0].id for identity_id in ids[:3]]
    for identity_id in ids[:3]:
        gallery.delete_identity(identity_id)
    assert gallery.index.building and gallery.index.saved is None  # still held: these answers are exact
    assert top1(gallery, added) == added_ids
    assert top1(gallery, faces[3:40]) == ids[3:40]
    answers = gallery.search(faces[:3], 20)
    assert [len(matches) for matches in answers] == [20] * 3
    assert {m.identity_id for matches in answers for m in matches}.isdisjoint(ids[:3])
    assert len(gallery.index) == 301

    hold.release.set()
    assert gallery.index.wait_for_build(60)
    # Swapped in at the change it was built at (300: the deleted faces are in its graph, masked), the 7 changes
    # since caught up; 7 > rebuild_after, so the next build made one holding them.
    saved = gallery.index.saved
    assert (hold.calls, saved.tag.version, saved.faces, len(saved), len(gallery.index)) == (2, 307, 301, 304, 301)
    added_faces = [gallery.get_identity(identity_id).faces[0].id for identity_id in added_ids]
    assert nearest_face_ids(gallery, added) == added_faces
    assert set(nearest_face_ids(gallery, faces[:3])).isdisjoint(deleted_faces)
    assert top1(gallery, np.concatenate([added, faces[3:40]])) == added_ids + ids[3:40]
    answers = gallery.search(faces[:3], 20)
    assert [len(matches) for matches in answers] == [20] * 3
    assert {m.identity_id for matches in answers for m in matches}.isdisjoint(ids[:3])


def test_a_failing_build_leaves_search_exact_and_is_tried_again_later(gallery_each_engine, held_build, caplog):
    hold = held_build
    hold.fail = RuntimeError("injected failure")
    hold.release.set()
    gallery = gallery_each_engine(build_retry_s=0.2)
    faces = vectors(250)
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.index"):
        ids = enrol(gallery, faces)
        assert top1(gallery, faces[:10]) == ids[:10]
        assert gallery.index.wait_for_build(60)
        assert "building the index of change 250 failed; searching exactly, tried again in 0 s" in caplog.text
        assert "RuntimeError: injected failure" in caplog.text
        hold.fail = None
        assert (gallery.index.saved, len(gallery.index)) == (None, 250)
        late = enrol(gallery, vectors(2, seed=8), prefix="late")
        gallery.delete_identity(ids[0])
        assert top1(gallery, np.concatenate([faces[1:30], vectors(2, seed=8)])) == ids[1:30] + late
        assert ids[0] not in {m.identity_id for m in gallery.search(faces[:1], 20)[0]}
        deadline = time.monotonic() + 30
        while gallery.index.saved is None and time.monotonic() < deadline:  # the retry delay: 0.2 s
            assert top1(gallery, faces[1:3]) == ids[1:3]
            gallery.index.wait_for_build(30)
            time.sleep(0.05)
    assert (gallery.index.saved.tag.version, gallery.index.saved.faces, len(gallery.index)) == (253, 251, 251)
    assert "built the index of change 253 (251 faces)" in caplog.text
    assert top1(gallery, np.concatenate([faces[1:30], vectors(2, seed=8)])) == ids[1:30] + late


def test_closing_stops_a_running_build_and_leaves_nothing_behind(gallery_each_engine, monkeypatch, tmp_path, caplog):
    from faceserve.gallery import ann

    holding, release, real = threading.Event(), threading.Event(), ann.build

    def held(faces):
        for count, face in enumerate(faces):
            if count == 100:  # inside usearch's build: 100 faces read, the graph's folder begun
                holding.set()
                assert release.wait(60)
            yield face
    monkeypatch.setattr(ann, "build", lambda parent, tag, faces, *args, **kwargs: real(parent, tag, held(faces),
                                                                                      *args, **kwargs))
    gallery = gallery_each_engine()
    faces = vectors(300)
    ids = enrol(gallery, faces)
    assert top1(gallery, faces[:5]) == ids[:5]
    assert holding.wait(30)
    assert [p.name.startswith(".build-300-") for p in (tmp_path / "index" / MODEL_FOLDER).iterdir()
            if p.is_dir()] == [True]
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.index"):
        gallery.index.close(wait_s=0)  # stop asked for; the build notices once it reads its next page
        release.set()
        assert gallery.index.wait_for_build(30)
    assert "the build of change 300 stopped (closing)" in caplog.text
    assert [p.name for p in (tmp_path / "index" / MODEL_FOLDER).iterdir()] == [".lock"]
    more = enrol(gallery, vectors(3, seed=4), prefix="more")
    assert top1(gallery, np.concatenate([faces[:5], vectors(3, seed=4)])) == ids[:5] + more
    assert (gallery.index.saved, gallery.index.building) == (None, False)  # searching exactly, no build started


def test_one_build_at_a_time_on_a_machine_the_other_worker_opens_what_it_saved(open_gallery, held_build):
    hold = held_build
    faces = vectors(300)
    first = open_gallery()
    ids = enrol(first, faces)
    assert top1(first, faces[:5]) == ids[:5]
    assert hold.holding.wait(30)
    second = open_gallery()  # another worker of the machine: its build waits for the first one's file lock
    assert top1(second, faces[5:10]) == ids[5:10] and second.index.building
    hold.release.set()
    assert first.index.wait_for_build(60) and second.index.wait_for_build(60)
    assert hold.calls == 1 and second.index.saved.folder == first.index.saved.folder
    assert top1(second, faces[:10]) == ids[:10]


def test_a_build_planned_before_a_full_reload_is_not_swapped_in(open_gallery, held_build, monkeypatch, caplog):
    import faceserve.gallery.index as index_module

    faces = vectors(300)
    gallery = open_gallery()
    ids = enrol(gallery, faces)
    assert top1(gallery, faces[:3]) == ids[:3]
    assert held_build.holding.wait(30)
    monkeypatch.setattr(index_module, "REMOVALS_KEPT", 2)
    for identity_id in ids[:3]:
        gallery.delete_identity(identity_id)  # three changes: more than it may catch up, so it reloads in full
    assert top1(gallery, faces[3:6]) == ids[3:6]
    with caplog.at_level(logging.INFO, logger="faceserve.gallery.index"):
        held_build.release.set()
        assert gallery.index.wait_for_build(60)
    assert "the index of change 300 is not searched: the gallery was reloaded meanwhile" in caplog.text
    assert (held_build.calls, gallery.index.saved.tag.version, gallery.index.saved.faces) == (2, 303, 297)
    answered = {m.identity_id for matches in gallery.search(faces[:3], 20) for m in matches}
    assert answered and answered.isdisjoint(ids[:3])


# ---- build_now: the index made before the workers start (`python -m faceserve gallery index`) ----------------


class CountedBuilds:
    """Counts the calls of `ann.build` (each a build), passing them on."""

    def __init__(self, monkeypatch):
        from faceserve.gallery import ann

        self.real, self.calls = ann.build, 0
        monkeypatch.setattr(ann, "build", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def store_counter(gallery: Gallery) -> int:
    with gallery.store.read() as tx:
        return tx.one("SELECT version FROM store_changes WHERE topic = 'gallery'")[0]


def test_build_now_saves_the_current_change_and_a_worker_starts_from_it_without_building(open_gallery, tmp_path,
                                                                                          monkeypatch):
    from faceserve.gallery.index import BUILT, CURRENT

    faces = vectors(300)
    builder = open_gallery()
    ids = enrol(builder, faces)
    result = builder.index.build_now()
    assert (result.outcome, result.version, result.faces, result.identities) == (BUILT, 300, 300, 300)
    assert result.folder == tmp_path / "index" / MODEL_FOLDER / "300" and saved_versions(tmp_path) == ["300"]
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["version"] == store_counter(builder) == 300 and manifest["faces"] == 300
    assert manifest["model"] == [MODEL.name, MODEL.version, MODEL.dimension]
    assert builder.index.version is None and builder.index.saved is None  # its own search loaded nothing
    builds = CountedBuilds(monkeypatch)
    worker = open_gallery()
    assert top1(worker, faces[:20]) == ids[:20]
    assert worker.index.saved.folder == result.folder and len(worker.index) == 300
    assert not worker.index.building and builds.calls == 0
    again = builder.index.build_now()
    assert (again.outcome, again.version, again.faces, again.folder) == (CURRENT, 300, 300, result.folder)
    assert builds.calls == 0 and saved_versions(tmp_path) == ["300"]
    builder.delete_identity(ids[0])  # a change since: the next run builds at the new counter, the old one pruned
    newer = builder.index.build_now()
    assert (newer.outcome, newer.version, newer.faces, newer.identities) == (BUILT, 301, 299, 299)
    assert builds.calls == 1 and saved_versions(tmp_path) == ["301"]


def test_build_now_below_the_exact_bound_builds_nothing_unless_forced(open_gallery, tmp_path):
    from faceserve.gallery.index import BUILT, EXACT

    gallery = open_gallery()
    enrol(gallery, vectors(50))
    result = gallery.index.build_now()
    assert (result.outcome, result.version, result.faces, result.identities, result.folder) == (EXACT, 50, 50, 50,
                                                                                                  None)
    assert not (tmp_path / "index").exists()
    forced = gallery.index.build_now(force=True)
    assert (forced.outcome, forced.version, forced.faces) == (BUILT, 50, 50) and saved_versions(tmp_path) == ["50"]
    empty = open_gallery("empty.db")
    assert empty.index.build_now(force=True).outcome == EXACT  # no face: nothing to index even when forced


def test_build_now_waits_for_the_machines_other_build_or_says_it_is_busy(open_gallery, held_build, tmp_path):
    from faceserve.gallery.index import CURRENT, BuildBusy

    faces = vectors(300)
    worker = open_gallery()
    ids = enrol(worker, faces)
    assert top1(worker, faces[:3]) == ids[:3]
    assert held_build.holding.wait(30)  # the worker's background build holds the machine's build lock
    command = open_gallery()
    started = time.monotonic()
    with pytest.raises(BuildBusy, match="another process still builds the index"):
        command.index.build_now(wait_s=0.3)
    assert 0.3 <= time.monotonic() - started < 5 and held_build.calls == 1
    waited: list = []
    waiting = threading.Thread(target=lambda: waited.append(command.index.build_now()))
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive() and not waited
    held_build.release.set()
    waiting.join(60)
    (result,) = waited
    assert (result.outcome, result.version, result.faces) == (CURRENT, 300, 300)  # what the worker saved, kept
    assert held_build.calls == 1 and saved_versions(tmp_path) == ["300"]


def test_build_now_on_each_engine_a_worker_starts_from_it(gallery_each_engine, monkeypatch):
    from faceserve.gallery.index import BUILT

    faces = vectors(250)
    builder = gallery_each_engine()
    ids = enrol(builder, faces)
    result = builder.index.build_now()
    assert (result.outcome, result.version, result.faces, result.identities) == (BUILT, 250, 250, 250)
    assert json.loads((result.folder / "manifest.json").read_text())["version"] == store_counter(builder)
    builds = CountedBuilds(monkeypatch)
    worker = gallery_each_engine()
    assert top1(worker, faces[:10]) == ids[:10] and worker.index.saved.folder == result.folder
    assert not worker.index.building and builds.calls == 0


def test_a_whole_gallery_is_read_for_a_build_through_the_primary_key(open_gallery):
    from faceserve.gallery.index import PAGE, WHOLE_PAGE

    gallery = open_gallery()
    enrol(gallery, vectors(3))
    arguments = (MODEL.name, MODEL.version, MODEL.dimension, -1, 10, "", 1000)
    with gallery.store.read() as tx:
        plan = " ".join(str(step[-1]) for step in tx.all("EXPLAIN QUERY PLAN " + WHOLE_PAGE, arguments))
        changes_plan = " ".join(str(step[-1]) for step in tx.all("EXPLAIN QUERY PLAN " + PAGE, arguments))
        pages = tx.all(WHOLE_PAGE, arguments), tx.all(PAGE, arguments)
    # every page a walk of the primary key, not every face sorted again (1.9 s a page at 1 M faces)
    assert "sqlite_autoindex_gallery_faces_1 (id>?)" in plan and "TEMP B-TREE" not in plan
    assert "gallery_faces_model" in changes_plan  # the faces added since a saved index: few, found by their change
    assert pages[0] == pages[1] and len(pages[0]) == 3
