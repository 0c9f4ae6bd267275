"""The `config.pbtxt` of faceserve's Python-backend models, generated from the model repository.

The pipeline model's plain outputs follow from the heads present (lesson 13): a head with labels
answers `<task>_label` (BYTES) and `<task>_score` (FP32) per face, a head without a number `<task>`. With an
embedding model, `embedding` (FP32, one unit vector per face: a row per face when `embed` or `identify` is
asked, else none) and, with `identify`, `identity_id`, `identity_name` (BYTES, empty for nobody known) and
`identity_similarity` (FP32, NaN for nobody known), so that a client can search its own gallery or read ours
without parsing the JSON answer. `request_id` (BYTES) names the answer remembered in the store while a trial runs
(its comparison rows are what `/models/compare` reports), empty when nothing was remembered.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from tritonclient.grpc import model_config_pb2 as mc

from faceserve.models.heads import EmbeddingHead
from faceserve.models.repository import Repository, write_python_model_folder
from faceserve.models.spec import ModelSpec

PIPELINE, ROTATE = "pipeline", "rotate"
MODELS = (PIPELINE, ROTATE)
SHIM = Path(__file__).with_name("model.py")  # each model's code: it hands the model to `serving.py`
# Where the NGC image finds the checkout (docs/triton.md mounts it there); the local Triton gives its own.
CONTAINER_ROOT = "/opt/faceserve"
# Requests one `execute` call may take together: the pipeline runs them concurrently, so their crops meet in
# the heads' dynamic batchers.
MAX_BATCH_SIZE = 32
INSTANCES = {False: 1, True: 2}  # by `gpu`: one decoding process per CPU core the host can spare for it


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    data_type: int  # model_config_pb2.TYPE_*
    dims: tuple[int, ...]  # after the batch dimension
    optional: bool = False


IMAGE = Tensor("image", mc.TYPE_STRING, (1,))
# `identify`: each face's best match in the gallery of FACESERVE_STORE, as the service's `analyze` answers it;
# `embed`: each face's embedding, without a gallery
IDENTIFY = Tensor("identify", mc.TYPE_BOOL, (1,), optional=True)
EMBED = Tensor("embed", mc.TYPE_BOOL, (1,), optional=True)
PIPELINE_INPUTS = (IMAGE, Tensor("detector", mc.TYPE_STRING, (1,), optional=True), IDENTIFY)
ROTATE_INPUTS = (IMAGE, Tensor("degrees", mc.TYPE_INT32, (1,)), Tensor("format", mc.TYPE_STRING, (1,), optional=True))
ROTATE_OUTPUTS = (Tensor("image", mc.TYPE_STRING, (1,)),)
ANALYSIS = Tensor("analysis", mc.TYPE_STRING, (1,))
BOXES = Tensor("boxes", mc.TYPE_FP32, (-1, 4))
SCORES = Tensor("scores", mc.TYPE_FP32, (-1,))
REQUEST_ID = Tensor("request_id", mc.TYPE_STRING, (1,))
IDENTITY_ID = Tensor("identity_id", mc.TYPE_STRING, (-1,))
IDENTITY_NAME = Tensor("identity_name", mc.TYPE_STRING, (-1,))
IDENTITY_SIMILARITY = Tensor("identity_similarity", mc.TYPE_FP32, (-1,))


def embedding_output(dimension: int) -> Tensor:
    return Tensor("embedding", mc.TYPE_FP32, (-1, dimension))


@dataclasses.dataclass(frozen=True)
class FaceOutput:
    """A per-face output: one value per face, read from the face's JSON answer."""

    tensor: Tensor
    value: Callable[[dict], object]


def face_outputs(spec: ModelSpec) -> tuple[FaceOutput, ...]:
    """The per-face outputs that carry a head's answers."""
    task = spec.task
    if spec.labels:
        return (FaceOutput(Tensor(f"{task}_label", mc.TYPE_STRING, (-1,)), lambda face: face[task]["label"]),
                FaceOutput(Tensor(f"{task}_score", mc.TYPE_FP32, (-1,)), lambda face: face[task]["score"]))
    return (FaceOutput(Tensor(task, mc.TYPE_FP32, (-1,)), lambda face: face[task]),)


def pipeline_inputs(embedding: ModelSpec | None) -> tuple[Tensor, ...]:
    return PIPELINE_INPUTS + ((EMBED,) if embedding is not None else ())


def pipeline_outputs(heads: list[ModelSpec], embedding: ModelSpec | None = None) -> tuple[Tensor, ...]:
    identity = () if embedding is None else (
        embedding_output(EmbeddingHead(embedding).dimension), IDENTITY_ID, IDENTITY_NAME, IDENTITY_SIMILARITY)
    return (ANALYSIS, REQUEST_ID, BOXES, SCORES,
            *(output.tensor for spec in heads for output in face_outputs(spec)), *identity)


def python_model_config(name: str, inputs: tuple[Tensor, ...], outputs: tuple[Tensor, ...], *,
                        gpu: bool = False) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=MAX_BATCH_SIZE)
    for tensor in inputs:
        config.input.add(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims),
                         optional=tensor.optional)
    for tensor in outputs:
        config.output.add(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))
    config.dynamic_batching.SetInParent()  # no queue delay: requests are grouped only when they queue
    # The Python code decodes images on CPU cores; on a GPU host the models it calls run on the GPU.
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=INSTANCES[gpu])
    config.parameters["faceserve_model"].string_value = name
    config.parameters["faceserve_root"].string_value = CONTAINER_ROOT
    return config


def configs(repository: Repository, *, gpu: bool = False) -> dict[str, mc.ModelConfig]:
    """Both models' configs for this repository's heads."""
    heads = [spec for _, spec in sorted(repository.heads.items())]
    embedding = repository.embedding
    return {PIPELINE: python_model_config(PIPELINE, pipeline_inputs(embedding), pipeline_outputs(heads, embedding),
                                          gpu=gpu),
            ROTATE: python_model_config(ROTATE, ROTATE_INPUTS, ROTATE_OUTPUTS, gpu=gpu)}


def write(repository_path: Path) -> list[str]:
    """Write both models into the canonical repository, beside the ONNX models they call."""
    repository = Repository.load(repository_path)
    cpu, gpu = configs(repository), configs(repository, gpu=True)
    for name in MODELS:
        write_python_model_folder(repository_path / name, cpu[name], SHIM, gpu[name])
    return list(MODELS)
