"""The in-memory matrix alone: ranks identities by their best face, exactly as brute force does, through
appends, removals and compaction; a search holding an old snapshot never sees a face under another name."""

from __future__ import annotations

import numpy as np
import pytest

from faceserve.gallery.similarity import SimilarityIndex

DIMENSION = 16


def brute_force(faces: dict[str, tuple[str, np.ndarray]], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    best: dict[str, float] = {}
    for identity, vector in faces.values():
        score = float(query @ vector / np.linalg.norm(query) / np.linalg.norm(vector))
        best[identity] = max(best.get(identity, -2.0), score)
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def assert_same(index: SimilarityIndex, faces: dict[str, tuple[str, np.ndarray]], queries: np.ndarray, k: int):
    for answer, query in zip(index.search(queries, k), queries):
        expected = brute_force(faces, query, k)
        assert [m.identity_id for m in answer] == [identity for identity, _ in expected]
        assert [m.name for m in answer] == [f"name of {identity}" for identity, _ in expected]
        np.testing.assert_allclose([m.similarity for m in answer], [s for _, s in expected], atol=1e-5)


def random_faces(rng, count: int, identities: int, start: int = 0) -> dict[str, tuple[str, np.ndarray]]:
    return {f"face{start + i}": (f"id{rng.integers(identities)}", rng.standard_normal(DIMENSION).astype(np.float32))
            for i in range(count)}


def rows(faces: dict[str, tuple[str, np.ndarray]]) -> list[tuple[str, str, str, np.ndarray]]:
    return [(face_id, identity, f"name of {identity}", vector) for face_id, (identity, vector) in faces.items()]


@pytest.mark.parametrize("k", [1, 5, 1000])
def test_search_equals_brute_force(k):
    rng = np.random.default_rng(0)
    faces = random_faces(rng, 500, 150)
    index = SimilarityIndex(DIMENSION)
    index.replace(rows(faces))
    assert len(index) == 500
    assert_same(index, faces, rng.standard_normal((12, DIMENSION)), k)


def test_appends_and_removals_keep_it_exact_through_compaction():
    rng = np.random.default_rng(1)
    faces = random_faces(rng, 300, 80)
    index = SimilarityIndex(DIMENSION)
    index.replace(rows(faces))
    queries = rng.standard_normal((8, DIMENSION))
    for step in range(6):
        added = random_faces(rng, 400, 200, start=1000 * (step + 1))
        removed = list(faces)[::2]
        for face_id in removed:
            del faces[face_id]
        faces.update(added)
        index.update(rows(added), removed)
        assert len(index) == len(faces)
        assert_same(index, faces, queries, 10)
    index.update([], list(faces))
    assert len(index) == 0 and index.search(queries, 5) == [[]] * len(queries)


def test_an_identity_without_faces_left_is_not_answered():
    index = SimilarityIndex(DIMENSION)
    vector = np.ones(DIMENSION, np.float32)
    index.replace([("f1", "a", "Ann", vector), ("f2", "b", "Ben", -vector)])
    index.update([], ["f1"])
    assert [m.name for m in index.search(vector[None], 5)[0]] == ["Ben"]


def test_an_old_snapshot_never_shows_a_removed_face_under_another_identity():
    index = SimilarityIndex(DIMENSION)
    ann = np.eye(DIMENSION, dtype=np.float32)[0]
    index.replace([("f1", "a", "Ann", ann)])
    held = index._snapshot  # a search that started before the changes below
    index.update([("f2", "b", "Ben", ann)], ["f1"])
    for _ in range(2000):  # appends past the held snapshot, then growth and compaction
        index.update([(f"x{_}", "c", "Cy", -ann)], [f"x{_ - 1}"] if _ else [])
    index._snapshot, current = held, index._snapshot
    assert all(m.name != "Ben" for m in index.search(ann[None], 5)[0])
    index._snapshot = current
    assert [m.name for m in index.search(ann[None], 5)[0]] == ["Ben", "Cy"]


def test_a_vector_without_a_unit_vector_never_matches_nor_spoils_its_identity():
    """Finding 1: one poisoned face (its float32 norm underflows to 0) made its identity's best score NaN, so
    that person was never identified again. Vectors stored before the import checked them still exist."""
    rng = np.random.default_rng(5)
    victim = rng.standard_normal(DIMENSION).astype(np.float32)
    index = SimilarityIndex(DIMENSION)
    index.replace([("good", "victim", "Victim", victim),
                   ("poison", "victim", "Victim", np.full(DIMENSION, 1e-30, np.float32)),
                   ("zero", "nobody", "Nobody", np.zeros(DIMENSION, np.float32)),
                   ("nan", "nobody", "Nobody", np.full(DIMENSION, np.nan, np.float32))])
    assert len(index) == 1  # only the usable face is in the matrix
    [[match]] = index.search(victim[None], k=5)
    assert (match.identity_id, round(match.similarity, 5)) == ("victim", 1.0)
    index.update([("later", "other", "Other", np.full(DIMENSION, 1e-30, np.float32))], ["poison"])
    assert [m.identity_id for m in index.search(victim[None], k=5)[0]] == ["victim"]
    assert index.search(np.zeros((1, DIMENSION), np.float32), k=5) == [[]]  # a zero query: NaN, never a match
