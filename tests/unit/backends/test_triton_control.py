"""Triton's repository API as a promotion drives it, without a server: the config that holds two versions."""

from __future__ import annotations

import pytest

from faceserve.backends.triton_control import TritonControlError, beside_config, holds, widened

LIVE = {"name": "emotion", "backend": "python", "max_batch_size": 64,
        "version_policy": {"specific": {"versions": ["1"]}},
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": ["64", "64", "1"]}],
        "output": [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["7"], "label_filename": "labels.txt"}],
        "instance_group": [{"name": "emotion_0", "count": 1, "kind": "KIND_CPU"}],
        "parameters": {"onnx_model_dir": {"string_value": "/repo/emotion"}}}


def test_two_versions_load_under_one_config_whose_differing_dims_are_free():
    config = beside_config(LIVE, [1, 2], "input", (48, 48, 1), {"probabilities": (7,)})
    assert config["version_policy"] == {"specific": {"versions": [1, 2]}}
    assert config["input"][0]["dims"] == [-1, -1, 1] and config["output"][0]["dims"] == [7]
    assert {key: config[key] for key in ("backend", "max_batch_size", "instance_group", "parameters")} == {
        key: LIVE[key] for key in ("backend", "max_batch_size", "instance_group", "parameters")}
    assert LIVE["input"][0]["dims"] == ["64", "64", "1"]  # the live config is left as Triton gave it


def test_a_free_dim_stays_free_and_ranks_must_agree():
    assert widened([-1, -1, 1], (64, 64, 1)) == [-1, -1, 1]
    with pytest.raises(TritonControlError, match="a tensor of rank 2 cannot be served beside one of rank 3"):
        widened([64, 64, 1], (64, 64))


def test_a_config_that_already_holds_both_versions_needs_no_reload():
    both = beside_config(LIVE, [1, 2], "input", (48, 48, 1), {"probabilities": (7,)})
    assert not holds(LIVE, both)
    as_triton_gives_it = {**both, "version_policy": {"specific": {"versions": ["1", "2"]}},
                          "input": [{**both["input"][0], "dims": ["-1", "-1", "1"]}]}
    assert holds(as_triton_gives_it, beside_config(as_triton_gives_it, [1, 2], "input", (64, 64, 1),
                                                   {"probabilities": (7,)}))  # the rollback's
