"""`convert quantize`'s parity mode for embeddings (`quantize.embedding_verdict`) on vectors made to the point:
the least cosine to the float descriptor, and the verification accuracy on every pair, at most half a point lost."""

from __future__ import annotations

import numpy as np

from convert.quantize import Budget, embedding_verdict

THRESHOLD = 0.5


def people_and_vectors() -> tuple[list[str], np.ndarray]:
    """Three people of four faces each (14 % of the pairs same-person, as the identity set), each face near its
    person's direction; and two faces of no person (labelled-detection faces: no pair), 66 pairs in all."""
    rng = np.random.default_rng(7)
    centres = np.linalg.qr(rng.standard_normal((64, 3)))[0].T  # three orthogonal directions
    people = [p for p in "abc" for _ in range(4)] + ["", ""]
    rows = [centres["abc".index(p)] + 0.2 * rng.standard_normal(64) / 8 if p else rng.standard_normal(64)
            for p in people]
    return people, np.array(rows, np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_the_same_vectors_pass_with_every_figure():
    people, vectors = people_and_vectors()
    figures, problems = embedding_verdict(vectors, vectors.copy(), people, THRESHOLD, Budget())
    assert problems == []
    assert figures["pairs"] == 66 and figures["decisions_changed"] == 0
    assert figures["verification_accuracy"] == {"float": 1.0, "int8": 1.0}
    assert figures["cosine_min"] > 0.99999 and figures["threshold"] == THRESHOLD


def test_one_decision_made_wrong_loses_more_than_half_a_point_and_is_refused():
    people, vectors = people_and_vectors()
    moved = vectors.copy()
    moved[0] = unit(vectors[0]) * 0.2 + unit(vectors[4]) * 0.98  # a's first face now looks like b: wrong pairs
    figures, problems = embedding_verdict(vectors, moved, people, THRESHOLD, Budget(embedding_cosine=-1.0))
    changed = figures["decisions_changed"]
    assert changed >= 1 and figures["verification_accuracy"]["int8"] == 1.0 - changed / 66
    assert len(problems) == 1 and problems[0].startswith(
        f"verification accuracy {1 - changed / 66:.1%} is {changed / 66 * 100:.1f} points below the float model's "
        f"100.0% ({changed} of 66 decisions changed; at most 0.5 points)")
    # a budget of more points takes it; the cosine rule still judges on its own
    assert embedding_verdict(vectors, moved, people, THRESHOLD, Budget(embedding_cosine=-1.0,
                                                                       verification_points=100))[1] == []
    _, problems = embedding_verdict(vectors, moved, people, THRESHOLD, Budget(verification_points=100))
    assert len(problems) == 1 and problems[0].startswith("cosine to the float descriptor ")


def test_a_small_move_of_every_vector_keeps_every_decision_and_passes():
    people, vectors = people_and_vectors()
    rng = np.random.default_rng(3)
    moved = unit(vectors) + 0.003 * rng.standard_normal(vectors.shape).astype(np.float32) / 8
    figures, problems = embedding_verdict(vectors, moved, people, THRESHOLD, Budget())
    assert problems == [] and figures["decisions_changed"] == 0 and 0.99 < figures["cosine_min"] < 1.0
