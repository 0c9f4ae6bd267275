"""Versions of a model: how answers name one ("name:version"), and adding, promoting and rolling back versions in
a model folder (the layout is `faceserve.models.repository`'s).

The model's `config.pbtxt` is the one file that says which version serves: promoting rewrites it whole (a temporary
file renamed over it), so a reader, Triton or a process killed half-way sees the old version or the new one, never
a mix. The GPU variant (`configs/gpu.pbtxt`) is rewritten first, the same way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from faceserve.models.repository import (CONFIG_FILE, GPU_CONFIG_FILE, LABELS_FILE, VERSION_RECIPE_FILE, model_config,
                                         read_config, serving_version, spec_of_config, versions, write_config,
                                         write_labels, write_model)
from faceserve.models.spec import ModelSpec, SpecError

BUILD_RECORD = "build.json"  # in a version's folder: its source, sha256 and the parity measured at its build
PREVIOUS_VERSION = "previous_version"  # the config parameter naming the version served before (what rollback serves)


class VersionError(ValueError):
    """A version operation that cannot be done; the message says why and what to do instead."""


def model_ref(name: str, version: str) -> str:
    return f"{name}:{version}"


def parse_model_ref(ref: str) -> tuple[str, str]:
    """(name, version) of a `model_ref`; a name may itself hold a colon, a version never does."""
    name, _, version = ref.rpartition(":")
    return name, version


def serving_config(spec: ModelSpec, version: int, *, gpu: bool = False, previous: int | None = None) -> mc.ModelConfig:
    """The model's config while `version` serves: its recipe, its labels, the policy naming it."""
    config = model_config(spec, gpu=gpu)
    if spec.labels:
        config.output[0].label_filename = f"{version}/{LABELS_FILE}"
    config.version_policy.specific.versions.append(version)
    if previous is not None:
        config.parameters[PREVIOUS_VERSION].string_value = str(previous)
    return config


def version_spec(model_dir: Path, version: int) -> ModelSpec:
    """The spec `version` serves with (its own recipe and labels)."""
    folder = model_dir / str(version)
    if not (folder / VERSION_RECIPE_FILE).is_file():
        raise VersionError(f"{model_dir.name} version {version} has no {VERSION_RECIPE_FILE} (it was built by "
                           f"`convert build` and never served beside another version); convert its artifact again "
                           f"with `python -m convert model`")
    spec = spec_of_config(read_config(folder / VERSION_RECIPE_FILE), folder)
    spec.check_labels()
    return dataclasses.replace(spec, version=str(version))


def _keep_recipe(model_dir: Path, version: int) -> None:
    """Give the serving version its own recipe and labels (a `convert build` version has them only in the model's
    folder), so that it can serve again once another one has."""
    folder = model_dir / str(version)
    if (folder / VERSION_RECIPE_FILE).is_file():
        return
    config = read_config(model_dir / CONFIG_FILE)
    spec = spec_of_config(config, model_dir)
    write_labels(spec, folder)
    write_config(model_config(dataclasses.replace(spec, version=str(version))), folder / VERSION_RECIPE_FILE)


def add_version(model_dir: Path, spec: ModelSpec, onnx_bytes: bytes, record: dict) -> int:
    """Write `spec`'s model as a new version beside the others (never over one); a new model's first version
    serves at once, any later one waits for `promote`. Returns its number."""
    taken = [int(d.name) for d in model_dir.iterdir() if d.name.isdigit()] if model_dir.is_dir() else []
    version = max(taken, default=0) + 1
    serving = serving_version(model_dir) if (model_dir / CONFIG_FILE).is_file() else None
    if serving is not None:
        _keep_recipe(model_dir, serving)
        if not read_config(model_dir / CONFIG_FILE).HasField("version_policy"):
            # without a policy the highest version serves (Triton's default): name the serving one first
            _serve(model_dir, version_spec(model_dir, serving), serving, previous=None)
    spec = dataclasses.replace(spec, version=str(version))
    folder = model_dir / str(version)
    folder.mkdir(parents=True)
    write_labels(spec, folder)
    write_config(model_config(spec), folder / VERSION_RECIPE_FILE)
    (folder / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    write_model(folder, onnx_bytes)  # last: a folder without its model is no version
    if serving is None:
        _serve(model_dir, spec, version, previous=None)
    return version


def _serve(model_dir: Path, spec: ModelSpec, version: int, previous: int | None) -> None:
    write_config(serving_config(spec, version, gpu=True, previous=previous), model_dir / GPU_CONFIG_FILE)
    write_config(serving_config(spec, version, previous=previous), model_dir / CONFIG_FILE)


def promote(model_dir: Path, version: int) -> tuple[int, int]:
    """Serve `version` of the model; returns (the version served before, `version`)."""
    if not (model_dir / CONFIG_FILE).is_file():
        raise VersionError(f"{model_dir} is not a model folder (no {CONFIG_FILE}); give a model of the repository")
    built = versions(model_dir)
    if version not in built:
        raise VersionError(f"{model_dir.name} has no version {version} (built: {', '.join(map(str, built))}); "
                           f"convert it first with `python -m convert model`")
    current = serving_version(model_dir)
    if current == version:
        raise VersionError(f"{model_dir.name} version {version} already serves")
    _keep_recipe(model_dir, current)
    try:
        spec = version_spec(model_dir, version)
    except SpecError as exc:
        raise VersionError(f"{model_dir.name} version {version} cannot serve: {exc}") from None
    if spec.name != model_dir.name:
        raise VersionError(f"version {version} of {model_dir.name} was built as {spec.name!r}; a version must carry "
                           f"its model's name")
    _serve(model_dir, spec, version, previous=current)
    return current, version


def previous_version(model_dir: Path) -> int | None:
    """The version served before the last promotion (what `rollback` serves); None when none is recorded."""
    if not (model_dir / CONFIG_FILE).is_file():
        return None
    previous = read_config(model_dir / CONFIG_FILE).parameters.get(PREVIOUS_VERSION)
    return None if previous is None else int(previous.string_value)


def rollback(model_dir: Path) -> tuple[int, int]:
    """Serve again the version served before the last promotion; returns (the version served before, it)."""
    if not (model_dir / CONFIG_FILE).is_file():
        raise VersionError(f"{model_dir} is not a model folder (no {CONFIG_FILE}); give a model of the repository")
    previous = previous_version(model_dir)
    if previous is None:
        raise VersionError(f"{model_dir.name} has no earlier serving version recorded; serve one with "
                           f"`python -m convert promote {model_dir.name} N`")
    return promote(model_dir, previous)


def build_record(model_dir: Path, version: int) -> dict:
    """A version's build record (empty when it has none)."""
    path = model_dir / str(version) / BUILD_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def version_records(model_dir: Path) -> list[dict]:
    """Each built version: its number, whether it serves, and its build record (source, sha256, parity; for an
    INT8 version what it was quantized from and its budget)."""
    serving = serving_version(model_dir)
    records = []
    for version in versions(model_dir):
        record = build_record(model_dir, version)
        records.append({"version": str(version), "serving": version == serving,
                        **{key: record[key] for key in ("source", "sha256", "quantized", "from_version", "parity",
                                                        "budget", "tolerance", "raw_tolerance") if key in record}})
    return records
