"""The peer scenario's arithmetic on hand-made pairs (benchmarks/peer.py): pairs from labelled vectors, a face not
found failing its pairs, errors at a threshold, the fewest errors, the EER, the rates at FRR 0 and FAR 0; and its
report table and plot from one side's row."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import peer
from benchmarks.sweeps import Config, Context

# Four same-person pairs, one of them with a face not found; six different-people pairs, one likewise.
PAIRS = peer.Pairs(np.array([0.9, 0.8, 0.5, -np.inf]), np.array([0.7, 0.4, 0.3, 0.2, 0.1, -np.inf]))


def test_pairs_of_labelled_vectors_and_a_face_not_found():
    people = ["ann", "ann", "bob", "bob"]
    vectors = [np.array([1.0, 0.0]), np.array([0.8, 0.6]), np.array([0.0, 1.0]), None]
    cosine = peer.pair_scores(people, vectors, peer.COSINE)
    assert cosine.same.tolist() == pytest.approx([0.8, -math.inf])  # ann-ann, bob-bob (bob's second not found)
    assert cosine.different.tolist() == pytest.approx([0.0, -math.inf, 0.6, -math.inf])
    distance = peer.pair_scores(people, vectors, peer.DISTANCE)
    assert distance.same.tolist() == pytest.approx([-math.sqrt(0.4), -math.inf])  # scores: higher is more alike
    assert peer.DISTANCE.native(distance.same[0]) == pytest.approx(math.sqrt(0.4))
    assert peer.DISTANCE.native(distance.same[1]) is None


def test_errors_at_a_threshold_count_unfound_faces_as_rejected():
    assert peer.errors(PAIRS, 0.6) == (1, 2)  # 0.7 accepted; 0.5 and the unfound pair rejected
    assert peer.errors(PAIRS, 0.5) == (1, 1)  # at or above: 0.5 is accepted
    assert peer.errors(PAIRS, math.inf) == (0, 4)
    assert peer.thresholds(PAIRS).tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 0.9, math.inf]


def test_judged_at_the_operating_point_and_at_every_threshold():
    judged = peer.judged(PAIRS, 0.6, peer.COSINE)
    assert judged == {
        "same_person_pairs": 4, "different_people_pairs": 6, "false_accepts": 1, "false_rejects": 2,
        "far": 0.1667, "frr": 0.5,
        # 2 errors at 0.5 (1 + 1) and at 0.8 (0 + 2): the tie goes to the fewer false accepts
        "fewest_errors": 2, "fewest_errors_false_accepts": 0, "fewest_errors_false_rejects": 2,
        "fewest_errors_threshold": 0.8,
        "eer": 0.25,  # at 0.5: FAR 1/6, FRR 1/4; nowhere closer
        "far_at_zero_frr": None,  # the unfound same-person pair is rejected at every threshold
        "frr_at_zero_far": 0.5,  # from 0.8 up: 0.5 and the unfound pair rejected
    }


def test_separation_over_the_pairs_scored():
    # same 0.9, 0.8, 0.5 (mean 0.7333, variance 0.028889); different 0.7 .. 0.1 (mean 0.34, variance 0.0424)
    assert peer.separation(PAIRS) == {"gap": -0.2, "d_prime": pytest.approx(2.083, abs=1e-3)}
    distances = peer.Pairs(np.array([-0.3, -0.5]), np.array([-0.4, -0.8]))
    assert peer.separation(distances)["gap"] == -0.1  # the nearest stranger (0.4) nearer than the farthest self (0.5)
    assert peer.separation(peer.Pairs(np.array([-np.inf]), np.array([0.1]))) == {"gap": None, "d_prime": None}


def test_judged_in_distances_and_with_every_face_found():
    pairs = peer.Pairs(np.array([-0.3, -0.5]), np.array([-0.4, -0.8]))  # distances 0.3, 0.5 and 0.4, 0.8
    judged = peer.judged(pairs, -0.6, peer.DISTANCE)
    assert (judged["false_accepts"], judged["false_rejects"]) == (1, 0)  # 0.4 <= 0.6 accepted
    assert judged["far_at_zero_frr"] == 0.5  # accepting up to 0.5 accepts 0.4 too
    assert judged["frr_at_zero_far"] == 0.5  # below 0.4 only 0.3 is accepted
    assert (judged["fewest_errors"], judged["fewest_errors_threshold"]) == (1, 0.3)


def test_a_sides_row_its_table_and_its_plot(tmp_path):
    people = ["ann", "ann", "bob", "bob"]
    side = peer.Side("lib", peer.DISTANCE, 0.6, [
        {"file": f"{i}.jpg", "boxes": [[0, 0, 9, 9]] if i != 3 else [], "detect_ms": 10.0, "detect_cpu_ms": 10.0,
         "embed_ms": 2.0 if i != 3 else None, "embed_cpu_ms": 2.0 if i != 3 else None} for i in range(4)],
        [np.array([0.0, 0.0]), np.array([0.3, 0.4]), np.array([1.0, 0.0]), None], {"threads": "one"})
    ctx = Context(Config((1,), 0, 1, (), (), 1), {}, "single", tmp_path, advance=lambda _: None)
    row = peer.side_row(ctx, side, people)
    assert (row["scenario"], row["variant"], row["photos"], row["faces_not_found"]) == ("peer", "lib", 4, ["3.jpg"])
    assert (row["detect_ms_per_photo"], row["embed_ms_per_photo"], row["requests"]) == (10.0, 2.0, 4)
    assert (row["detect_cpu_ms_per_photo"], row["embed_cpu_ms_per_photo"], row["cpu_percent"]) == (10.0, 2.0, 100.0)
    assert row["pairs"] == {"same": [0.5, None], "different": [1.0, None, pytest.approx(math.sqrt(0.65)), None]}
    assert (row["false_accepts"], row["false_rejects"]) == (0, 1)  # bob's pair fails with his unfound face
    table = "\n".join(peer.section([row]))
    assert "| lib | distance <= 0.6 | 1 (3.jpg) | 0/4 (0.0%) | 1/2 (50.0%) |" in table
    assert peer.draw([row], tmp_path).read_bytes().startswith(b"\x89PNG")
