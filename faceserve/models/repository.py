"""The model repository: Triton's folder layout, and the one table between a ModelSpec and its config.

    <repository>/<model>/config.pbtxt        the canonical config (onnxruntime backend, KIND_CPU)
    <repository>/<model>/configs/gpu.pbtxt   the KIND_GPU variant (`--model-config-name=gpu`)
    <repository>/<model>/labels.txt          one label per output unit, when the model has labels
    <repository>/<model>/1/model.onnx        built by `convert`, never committed
    <repository>/<model>/1/model.py          instead, for a Python-backend model: its code, copied

Versions, Triton's way: `convert model` adds `<model>/<n>/` beside the others, each with its `model.onnx`, its
`build.json` (source and parity), its `labels.txt` and its own recipe (`recipe.pbtxt`: the config it serves
with). The model's `config.pbtxt` is the serving version's recipe, its labels `<n>/labels.txt`, and names that
version in its `version_policy` (`specific { versions: [n] }`); without a policy (what `convert build` writes)
the highest version serves, as in Triton. `faceserve.models.versions` promotes and rolls back.

`PARAMETERS` maps each recipe field of `ModelSpec` to its `config.pbtxt` parameter, both ways:
`convert` writes through `model_config`, and the service, the backends, the local Triton and
the benchmarks read through `load_spec` / `Repository.load`.
"""

from __future__ import annotations

import dataclasses
import operator
import shutil
from pathlib import Path
from typing import Callable, Mapping

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from faceserve.models import tasks
from faceserve.models.spec import CropRecipe, ModelSpec

CONFIG_FILE = "config.pbtxt"
GPU_CONFIG_FILE = "configs/gpu.pbtxt"
LABELS_FILE = "labels.txt"
VERSION_DIR = "1"  # the version `convert build` writes
VERSION_RECIPE_FILE = "recipe.pbtxt"  # in a version's folder: the config it serves with
ONNX_MODEL_FILE = "model.onnx"  # what `convert` builds
PYTHON_MODEL_FILE = "model.py"  # what the Python backend runs (faceserve's own models, the local Triton's shim)
INPUT_NAME = "input"
# A GPU's cost per image falls with the batch: let batches grow, up to max_batch_size.
GPU_QUEUE_DELAY_US = 2000
PYTHON_BACKEND = "python"  # faceserve's own models (faceserve.triton_models): code, nothing to build


@dataclasses.dataclass(frozen=True)
class Kind:
    """How one kind of recipe value is written as a config string and read back (and coerced from TOML)."""

    to_text: Callable[[object], str]
    from_text: Callable[[str], object]
    coerce: Callable[[object], object]


TEXT = Kind(str, str, str)
NUMBER = Kind(repr, float, float)
FLAG = Kind(lambda v: str(v).lower(), lambda t: t == "true", bool)
PAIR = Kind(lambda v: f"{v[0]},{v[1]}", lambda t: tuple(int(v) for v in t.split(",")),
            lambda v: tuple(int(x) for x in v))


@dataclasses.dataclass(frozen=True)
class Parameter:
    key: str  # the config.pbtxt parameter
    field: str  # the ModelSpec attribute (dotted into the crop recipe), also the manifest key
    kind: Kind = TEXT
    tasks: tuple[str, ...] = ()  # written only for models of these tasks (empty: every model)

    def value(self, spec: ModelSpec) -> object:
        return operator.attrgetter(self.field)(spec)


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("task", "task"),
    Parameter("decoder", "decoder"),
    Parameter("colour", "colour"),
    Parameter("scale", "scale", NUMBER),
    Parameter("offset", "offset", NUMBER),
    Parameter("letterbox", "letterbox", FLAG),
    Parameter("crop_margin", "crop.margin", NUMBER),
    Parameter("crop_pad_px", "crop.pad_px", PAIR),
    Parameter("crop_stretch", "crop.stretch", FLAG),
    Parameter("crop_square", "crop.square", FLAG),
    Parameter("crop_align", "crop.align", FLAG),
    Parameter("crop_template", "crop.template"),
    Parameter("units", "units"),
    Parameter("source", "source"),
    Parameter("sha256", "sha256"),
    Parameter("version", "version"),
    Parameter("score_threshold", "score_threshold", NUMBER, tasks=tasks.SCORE_THRESHOLD_TASKS),
    Parameter("nms_iou", "nms_iou", NUMBER, tasks=tasks.NMS_TASKS),
)


def make_spec(recipe: Mapping[str, object], **model) -> ModelSpec:
    """A ModelSpec from recipe values keyed by field (absent ones take ModelSpec's defaults) and the
    model's own fields (name, tensors, batching)."""
    crop = {field.split(".", 1)[1]: value for field, value in recipe.items() if field.startswith("crop.")}
    rest = {field: value for field, value in recipe.items() if not field.startswith("crop.")}
    return ModelSpec(**model, **rest, crop=CropRecipe(**crop))


# ---- layout --------------------------------------------------------------------------------

def versions(model_dir: Path) -> list[int]:
    """The built versions of a model folder: numbered folders holding a model, in order."""
    if not model_dir.is_dir():
        return []
    return sorted(int(d.name) for d in model_dir.iterdir()
                  if d.name.isdigit() and ((d / ONNX_MODEL_FILE).is_file() or (d / PYTHON_MODEL_FILE).is_file()))


def serving_version(model_dir: Path, config: mc.ModelConfig | None = None) -> int | None:
    """The version the config's `version_policy` names (`specific`); otherwise, as Triton's default `latest`, the
    highest built one. None when none is built."""
    config = config if config is not None else read_config(model_dir / CONFIG_FILE)
    if config.version_policy.WhichOneof("policy_choice") == "specific":
        return max(config.version_policy.specific.versions)
    built = versions(model_dir)
    return built[-1] if built else None


def model_file(model_dir: Path, version: int | str | None = None) -> Path:
    """The built ONNX model of a model folder: of `version`, or of the serving one (version 1 when none is built
    or the folder has no config)."""
    if version is None:
        version = serving_version(model_dir) if (model_dir / CONFIG_FILE).is_file() else None
    return model_dir / str(version or VERSION_DIR) / ONNX_MODEL_FILE


def model_dirs(repository: Path) -> list[Path]:
    """Model folders of a repository that hold a config and a built model."""
    return sorted(d for d in repository.iterdir() if (d / CONFIG_FILE).is_file() and model_file(d).is_file())


def python_model_dirs(repository: Path) -> list[Path]:
    """Model folders whose config runs Python code (the pipeline and rotate models), not an ONNX file."""
    return sorted(d for d in repository.iterdir()
                  if (d / CONFIG_FILE).is_file() and read_config(d / CONFIG_FILE).backend == PYTHON_BACKEND)


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write_config(config: mc.ModelConfig, path: Path) -> None:
    """Written whole then renamed: a reader (or Triton) sees the old config or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text_format.MessageToString(config))
    partial.replace(path)


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line, in output order; blank lines at the end (and a missing final newline) are fine."""
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return tuple(lines)


def write_labels(spec: ModelSpec, model_dir: Path) -> None:
    path = model_dir / LABELS_FILE
    if spec.labels:
        path.write_text("".join(f"{label}\n" for label in spec.labels))
    elif path.exists():
        path.unlink()


# ---- ModelSpec <-> config.pbtxt --------------------------------------------------------------

def load_spec(model_dir: Path) -> ModelSpec:
    """The serving version's spec (its version the folder's number, whatever the `version` parameter says)."""
    config = read_config(model_dir / CONFIG_FILE)
    spec = spec_of_config(config, model_dir)
    version = serving_version(model_dir, config)
    return spec if version is None else dataclasses.replace(spec, version=str(version))


def spec_of_config(config: mc.ModelConfig, folder: Path) -> ModelSpec:
    """The spec a config describes, its labels file read relative to `folder` (a model's, or a version's)."""
    params = {key: value.string_value for key, value in config.parameters.items()}
    labels_path = folder / ((config.output[0].label_filename if config.output else "") or LABELS_FILE)
    (model_input,) = config.input
    height, width, channels = (int(d) for d in model_input.dims)
    spec = make_spec(
        {p.field: p.kind.from_text(params[p.key]) for p in PARAMETERS if p.key in params},
        name=config.name, input_name=model_input.name, height=height, width=width, channels=channels,
        output_names=tuple(o.name for o in config.output),
        output_dims=tuple(tuple(int(d) for d in o.dims) for o in config.output),
        max_batch_size=config.max_batch_size,
        labels=read_labels(labels_path) if labels_path.exists() else (),
        queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
        preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
    )
    spec.check_labels()
    return spec


def model_config(spec: ModelSpec, *, gpu: bool = False, instances: int = 1) -> mc.ModelConfig:
    """The canonical Triton config: real onnxruntime backend, dynamic batching, the recipe as parameters."""
    config = mc.ModelConfig(name=spec.name, platform="onnxruntime_onnx", max_batch_size=spec.max_batch_size,
                            default_model_filename=ONNX_MODEL_FILE)
    config.input.add(name=spec.input_name, data_type=mc.TYPE_FP32,
                     format=mc.ModelInput.FORMAT_NHWC if spec.channels == 3 else mc.ModelInput.FORMAT_NONE,
                     dims=list(spec.input_shape))
    for index, (name, dims) in enumerate(zip(spec.output_names, spec.output_dims)):
        output = config.output.add(name=name, data_type=mc.TYPE_FP32, dims=list(dims))
        if index == 0 and spec.labels:
            output.label_filename = LABELS_FILE
    if gpu:
        config.dynamic_batching.max_queue_delay_microseconds = GPU_QUEUE_DELAY_US
    else:
        config.dynamic_batching.max_queue_delay_microseconds = spec.queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(spec.preferred_batch_sizes)
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU,
                              count=instances)
    for p in PARAMETERS:
        if p.tasks and spec.task not in p.tasks:
            continue
        config.parameters[p.key].string_value = p.kind.to_text(p.value(spec))
    return config


def write_onnx_model_folder(model_dir: Path, spec: ModelSpec, onnx_bytes: bytes) -> None:
    """Config, GPU config, labels and the ONNX model (in the spec's version folder), the model last."""
    write_config(model_config(spec), model_dir / CONFIG_FILE)
    write_config(model_config(spec, gpu=True), model_dir / GPU_CONFIG_FILE)
    write_labels(spec, model_dir)
    write_model(model_dir / spec.version, onnx_bytes)


def write_model(version_dir: Path, onnx_bytes: bytes) -> None:
    """A version's ONNX model, written whole then renamed."""
    target = version_dir / ONNX_MODEL_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(ONNX_MODEL_FILE + ".partial")
    partial.write_bytes(onnx_bytes)
    partial.replace(target)


def write_python_model_folder(model_dir: Path, config: mc.ModelConfig, code: Path,
                              gpu_config: mc.ModelConfig | None = None) -> None:
    """A Python-backend model: its config (and GPU config), and `code` copied as its `1/model.py`."""
    write_config(config, model_dir / CONFIG_FILE)
    if gpu_config is not None:
        write_config(gpu_config, model_dir / GPU_CONFIG_FILE)
    (model_dir / VERSION_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(code, model_dir / VERSION_DIR / PYTHON_MODEL_FILE)


# ---- the built models, by role ------------------------------------------------------------

def is_head(spec: ModelSpec) -> bool:
    """Every repository model that is neither a detector, a landmark model, a whole-image classifier nor
    the embedding model is a face head answering a response field."""
    return tasks.is_head(spec.task)


# The embedding model served where a repository holds several and none is named (FACESERVE_EMBEDDING_MODEL): dlib's
# ResNet separates every pair of the calibration set that FaceRes confuses, at a third of its cost per face
# (docs/identity.md, "Which embedding").
DEFAULT_EMBEDDING = "embedding_dlib"


@dataclasses.dataclass(frozen=True)
class Repository:
    path: Path
    specs: dict[str, ModelSpec]
    missing: list[str]  # declared (config.pbtxt) but not built
    serving_embedding: str | None = None  # the embedding model identity serves; the others search what they enrolled

    @classmethod
    def load(cls, path: Path, embedding: str | None = None) -> "Repository":
        """`embedding`: the embedding model to serve (FACESERVE_EMBEDDING_MODEL); None: the only one, or
        DEFAULT_EMBEDDING where several are built."""
        if not path.is_dir():
            raise FileNotFoundError(f"model repository {path} does not exist; run `python -m convert build`")
        built = {d.name: load_spec(d) for d in model_dirs(path)}
        declared = ({d.name for d in path.iterdir() if (d / CONFIG_FILE).is_file()}
                    - {d.name for d in python_model_dirs(path)})
        # one model per role: per task, and for detectors per decoder (each decoder is its own detector); embedding
        # models are the exception: a gallery enrolled under one is searched with it until it is re-embedded
        roles: dict[tuple[str, str], list[str]] = {}
        for spec in built.values():
            if spec.task not in (tasks.CLASSIFIER, tasks.EMBEDDING):
                role = (spec.task, spec.decoder if spec.task == tasks.DETECTOR else "")
                roles.setdefault(role, []).append(spec.name)
        for (task, decoder), names in roles.items():
            if len(names) > 1:
                what = f"{decoder} {task}" if decoder else task
                raise ValueError(f"{path} has several {what} models ({', '.join(sorted(names))}); "
                                 f"keep one per repository")
        embeddings = sorted(name for name, spec in built.items() if spec.task == tasks.EMBEDDING)
        return cls(path, built, sorted(declared - set(built)), _serving_embedding(path, embeddings, embedding))

    def model_file(self, name: str) -> Path:
        """The serving version's model file."""
        return model_file(self.path / name, self.specs[name].version)

    def with_task(self, *tasks: str) -> dict[str, ModelSpec]:
        return {name: spec for name, spec in self.specs.items() if spec.task in tasks}

    @property
    def detectors(self) -> list[ModelSpec]:
        return list(self.with_task(tasks.DETECTOR).values())

    @property
    def heads(self) -> dict[str, ModelSpec]:
        """The face models, by the response field each answers (its task)."""
        return {spec.task: spec for spec in self.specs.values() if is_head(spec)}

    @property
    def classifiers(self) -> dict[str, ModelSpec]:
        return self.with_task(tasks.CLASSIFIER)

    @property
    def landmarks(self) -> ModelSpec | None:
        found = list(self.with_task(tasks.LANDMARKS).values())
        return found[0] if found else None

    @property
    def embedding(self) -> ModelSpec | None:
        """The serving embedding model: new faces are enrolled, verified and searched with it."""
        return self.specs[self.serving_embedding] if self.serving_embedding else None

    @property
    def earlier_embeddings(self) -> list[ModelSpec]:
        """The other embedding models: each searches the faces enrolled under it until they are re-embedded."""
        return [spec for name, spec in sorted(self.with_task(tasks.EMBEDDING).items())
                if name != self.serving_embedding]


def _serving_embedding(path: Path, built: list[str], named: str | None) -> str | None:
    if named:
        if named not in built:
            raise ValueError(f"FACESERVE_EMBEDDING_MODEL={named} is not an embedding model of {path}; it has "
                             f"{', '.join(built) or 'none'} (build it with `python -m convert build --only {named}`)")
        return named
    if len(built) <= 1:
        return built[0] if built else None
    if DEFAULT_EMBEDDING in built:
        return DEFAULT_EMBEDDING
    raise ValueError(f"{path} has several embedding models ({', '.join(built)}); name the one to serve with "
                     "FACESERVE_EMBEDDING_MODEL")


def recipe_from_manifest(entry: Mapping[str, object]) -> dict[str, object]:
    """The recipe fields a manifest entry states (`crop = {margin = ...}` for the crop ones), coerced."""
    recipe = {}
    for p in PARAMETERS:
        section, _, key = p.field.rpartition(".")
        holder = entry.get(section, {}) if section else entry
        if key in holder:
            recipe[p.field] = p.kind.coerce(holder[key])
    return recipe

