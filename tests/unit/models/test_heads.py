"""Face heads: one class per decoder kind, found by the repository's `decoder`, one answer per row."""

from __future__ import annotations

import numpy as np
import pytest

from faceserve.models import heads
from faceserve.models.spec import ModelSpec


def head_spec(decoder: str, labels: tuple[str, ...], units: int, task: str = "field") -> ModelSpec:
    return ModelSpec(name="h", task=task, decoder=decoder, input_name="input", height=4, width=4, channels=3,
                     output_names=("out",), output_dims=((units,),), colour="rgb", scale=1.0, offset=0.0,
                     labels=labels)


def test_softmax_gives_the_best_label_and_every_score():
    head = heads.head_for(head_spec("softmax", ("a", "b", "c"), 3))
    (answer,) = head.decode({"out": np.array([[0.1, 0.7, 0.2]], np.float32)})
    assert answer["label"] == "b" and answer["score"] == pytest.approx(0.7)
    assert answer["scores"] == pytest.approx({"a": 0.1, "b": 0.7, "c": 0.2})


def test_sigmoid_picks_the_positive_label_from_one_half():
    head = heads.head_for(head_spec("sigmoid", ("female", "male"), 1))
    low, half, high = head.decode({"out": np.array([[0.2], [0.5], [1.3]], np.float32)})
    assert (low["label"], low["score"]) == ("female", pytest.approx(0.8))
    assert half["label"] == "male"
    assert high["scores"] == {"female": 0.0, "male": 1.0}  # clipped to a probability


def test_regression_answers_one_number_per_face():
    head = heads.head_for(head_spec("regression", (), 1, task="age"))
    assert head.field == "age"
    assert head.decode({"out": np.array([[31.5], [7.25]], np.float32)}) == [31.5, 7.25]


def test_the_field_is_the_task_and_unknown_decoders_are_refused():
    assert heads.head_for(head_spec("softmax", ("x", "y"), 2, task="emotion_2")).field == "emotion_2"
    with pytest.raises(ValueError, match="decoder 'cluster' is not a face head"):
        heads.head_for(head_spec("cluster", (), 8))
    assert heads.is_head(head_spec("softmax", ("x",), 1, task="mood"))
    assert not heads.is_head(head_spec("softmax", ("x",), 1, task="image_classifier"))
    assert not heads.is_head(head_spec("embedding", (), 8, task="embedding"))  # the identity stage's, no field


def test_embedding_rows_become_unit_vectors():
    head = heads.head_for(head_spec("embedding", (), 3, task="embedding"))
    assert head.dimension == 3
    vectors = head.decode({"out": np.array([[3, 0, 4], [0, 0, 0]], np.float32)})
    assert vectors.shape == (2, 3) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, [[0.6, 0, 0.8], [0, 0, 0]])  # a zero row stays zero: it matches nothing


def test_batch_cuts_one_row_per_box_by_the_recipe():
    head = heads.head_for(head_spec("regression", (), 1))
    image = np.zeros((20, 30, 3), np.uint8)
    assert head.batch(image, [(0, 0, 10, 10), (5, 5, 25, 15)]).shape == (2, 4, 4, 3)
