"""The model repository: the field table writes and reads back every recipe field, and the layout."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from faceserve.models import repository
from faceserve.models.repository import (CONFIG_FILE, GPU_CONFIG_FILE, GPU_QUEUE_DELAY_US, PARAMETERS, Repository,
                                         load_spec, make_spec, model_config, model_file, read_config,
                                         recipe_from_manifest, write_onnx_model_folder)
from faceserve.models.spec import CropRecipe, ModelSpec


def detector_spec() -> ModelSpec:
    return ModelSpec(name="det", task="face_detector", decoder="blazeface", input_name="input", height=128,
                     width=128, channels=3, output_names=("regressors", "classificators"),
                     output_dims=((896, 16), (896, 1)), colour="rgb", scale=1 / 127.5, offset=-1.0,
                     letterbox=True, crop=CropRecipe(margin=0.25, pad_px=(3, 4), stretch=True), units="px",
                     source="pypi:x==1!y", sha256="ab" * 32, version="2", score_threshold=0.7, nms_iou=0.4,
                     queue_delay_us=100, preferred_batch_sizes=(4, 8), max_batch_size=16)


def test_every_recipe_field_round_trips_through_config_pbtxt(tmp_path):
    original = detector_spec()
    write_onnx_model_folder(tmp_path / "det", original, b"not a real model")
    assert load_spec(tmp_path / "det") == original
    assert model_file(tmp_path / "det").read_bytes() == b"not a real model"


def test_one_parameter_per_recipe_field():
    config = model_config(detector_spec())
    assert set(config.parameters) == {p.key for p in PARAMETERS}
    head = dataclasses.replace(detector_spec(), task="emotion", decoder="softmax", labels=tuple("abcdefg"),
                               output_names=("p",), output_dims=((7,),))
    assert set(model_config(head).parameters) == {p.key for p in PARAMETERS if not p.tasks}


def test_gpu_config_batches_up_to_max_with_a_queue_delay(tmp_path):
    write_onnx_model_folder(tmp_path / "det", detector_spec(), b"")
    gpu = read_config(tmp_path / "det" / GPU_CONFIG_FILE)
    cpu = read_config(tmp_path / "det" / CONFIG_FILE)
    assert gpu.dynamic_batching.max_queue_delay_microseconds == GPU_QUEUE_DELAY_US
    assert list(gpu.dynamic_batching.preferred_batch_size) == [] and gpu.instance_group[0].kind == 1  # KIND_GPU
    assert list(cpu.dynamic_batching.preferred_batch_size) == [4, 8] and cpu.instance_group[0].kind == 2


def test_manifest_values_are_coerced_and_absent_ones_take_the_spec_defaults():
    recipe = recipe_from_manifest({"task": "age", "decoder": "regression", "colour": "bgr", "scale": 1,
                                   "offset": 0, "crop": {"margin": 0.4, "stretch": True}, "units": "years"})
    assert recipe == {"task": "age", "decoder": "regression", "colour": "bgr", "scale": 1.0, "offset": 0.0,
                      "crop.margin": 0.4, "crop.stretch": True, "units": "years"}
    spec = make_spec(recipe, name="age", input_name="input", height=64, width=64, channels=3,
                     output_names=("age",), output_dims=((1,),))
    assert spec.crop == CropRecipe(margin=0.4, pad_px=(0, 0), stretch=True) and spec.letterbox is False


def test_repository_roles_and_missing_models(tmp_path):
    write_onnx_model_folder(tmp_path / "det", detector_spec(), b"")
    head = dataclasses.replace(detector_spec(), name="age", task="age", decoder="regression",
                               output_names=("age",), output_dims=((1,),))
    write_onnx_model_folder(tmp_path / "age", head, b"")
    (tmp_path / "gender").mkdir()
    (tmp_path / "gender" / CONFIG_FILE).write_text((tmp_path / "age" / CONFIG_FILE).read_text())
    repo = Repository.load(tmp_path)
    assert [s.name for s in repo.detectors] == ["det"] and list(repo.heads) == ["age"]
    assert repo.classifiers == {} and repo.missing == ["gender"]
    assert repo.model_file("age") == tmp_path / "age" / head.version / repository.ONNX_MODEL_FILE  # its serving version


def test_two_models_answering_one_field_are_refused(tmp_path):
    head = dataclasses.replace(detector_spec(), task="age", decoder="regression", output_names=("age",),
                               output_dims=((1,),))
    write_onnx_model_folder(tmp_path / "a", dataclasses.replace(head, name="a"), b"")
    write_onnx_model_folder(tmp_path / "b", dataclasses.replace(head, name="b"), b"")
    with pytest.raises(ValueError, match="several age models"):
        Repository.load(tmp_path)


def test_several_embedding_models_serve_one_and_keep_the_others_for_their_galleries(tmp_path):
    embedding = dataclasses.replace(detector_spec(), task="embedding", decoder="embedding",
                                    output_names=("descriptor",), output_dims=((128,),))
    for name in ("faceres", repository.DEFAULT_EMBEDDING, "other"):
        write_onnx_model_folder(tmp_path / name, dataclasses.replace(embedding, name=name), b"")
    repo = Repository.load(tmp_path)
    assert repo.embedding.name == repository.DEFAULT_EMBEDDING
    assert [s.name for s in repo.earlier_embeddings] == ["faceres", "other"]
    named = Repository.load(tmp_path, embedding="faceres")
    assert named.embedding.name == "faceres" and [s.name for s in named.earlier_embeddings] == [
        repository.DEFAULT_EMBEDDING, "other"]
    with pytest.raises(ValueError, match="FACESERVE_EMBEDDING_MODEL=absent is not an embedding model of .*; it has "
                                         "embedding_dlib, faceres, other"):
        Repository.load(tmp_path, embedding="absent")
    shutil.rmtree(tmp_path / repository.DEFAULT_EMBEDDING)
    with pytest.raises(ValueError, match=r"several embedding models \(faceres, other\); name the one to serve"):
        Repository.load(tmp_path)
    shutil.rmtree(tmp_path / "other")
    only = Repository.load(tmp_path)
    assert only.embedding.name == "faceres" and only.earlier_embeddings == []
