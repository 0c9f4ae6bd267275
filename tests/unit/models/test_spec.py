"""A model's recipe: label counts checked against its outputs, and its public description."""

from __future__ import annotations

import pytest

from faceserve.models.spec import CropRecipe, ModelSpec, SpecError


def spec(**kwargs) -> ModelSpec:
    base = dict(name="m", task="emotion", decoder="softmax", input_name="input", height=8, width=8, channels=1,
                output_names=("p",), output_dims=((3,),), colour="gray", scale=1.0, offset=0.0,
                labels=("a", "b", "c"))
    return ModelSpec(**{**base, **kwargs})


def test_softmax_needs_one_label_per_output():
    spec().check_labels()
    with pytest.raises(SpecError, match="m: 2 labels for 3 softmax outputs"):
        spec(labels=("a", "b")).check_labels()


def test_sigmoid_needs_one_output_and_two_labels():
    spec(decoder="sigmoid", output_dims=((1,),), labels=("female", "male")).check_labels()
    with pytest.raises(SpecError, match="1 label for 1 sigmoid outputs"):
        spec(decoder="sigmoid", output_dims=((1,),), labels=("male",)).check_labels()


def test_defaults_are_the_cpu_batching_recipe():
    s = spec()
    assert (s.max_batch_size, s.queue_delay_us, s.preferred_batch_sizes) == (64, 0, (8,))
    assert s.crop == CropRecipe(margin=0.0, pad_px=(0, 0), stretch=False)


def test_describe_has_detector_fields_only_for_detectors():
    head = spec().describe()
    assert head["input"]["shape"] == [-1, 8, 8, 1] and head["labels"] == ["a", "b", "c"]
    assert "score_threshold" not in head
    detector = spec(task="face_detector", decoder="blazeface", labels=(), score_threshold=0.7).describe()
    assert detector["score_threshold"] == 0.7 and detector["nms_iou"] == 0.3
