"""A face head's trial of a candidate version beside its serving one, and what a trial compares.

`shadow`: the candidate runs on the same faces as the serving version, and the serving version answers.
`canary`: a set share of requests is answered by the candidate (the serving version runs beside it, so that the two
are compared on the same faces); which ones is decided by the request's id (`drawn`), the same in every process.

A trial is three parameters of the model's `config.pbtxt` (`candidate_version`, `candidate_mode`, `canary_share`),
not a file of its own: the config is the one file that says what a model serves, rewritten whole by one rename
(`repository.write_config`), so the serving version and its candidate always change together — a promotion (which
writes the config from the version's recipe) ends the trial in the same rename, and no reader ever sees a candidate
that is the serving version or a trial of a version the config no longer serves. The watcher and
`POST /models/reload` already follow that file. The version policy keeps naming the serving version alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from faceserve.models import tasks
from faceserve.models.repository import (CONFIG_FILE, GPU_CONFIG_FILE, Repository, load_spec, read_config,
                                         serving_version, versions, write_config)
from faceserve.models.spec import ModelSpec, SpecError
from faceserve.models.versions import VersionError, version_spec

SHADOW, CANARY = "shadow", "canary"
MODES = (SHADOW, CANARY)
CANDIDATE_VERSION, CANDIDATE_MODE, CANARY_SHARE = "candidate_version", "candidate_mode", "canary_share"
TRIAL_PARAMETERS = (CANDIDATE_VERSION, CANDIDATE_MODE, CANARY_SHARE)


@dataclasses.dataclass(frozen=True)
class Trial:
    mode: str  # SHADOW or CANARY
    version: int  # the candidate's
    share: float = 0.0  # CANARY: the share of requests the candidate answers

    def answers(self, request_key: str | None) -> bool:
        """Whether the candidate answers the request known by `request_key`."""
        return self.mode == CANARY and request_key is not None and drawn(request_key) < self.share

    def describe(self, name: str) -> dict:
        return {"mode": self.mode, "candidate": f"{name}:{self.version}",
                **({"share": self.share} if self.mode == CANARY else {})}


def drawn(request_key: str) -> float:
    """The request's place in [0, 1): the first 8 bytes of its key's sha256 (every process draws the same)."""
    return int.from_bytes(hashlib.sha256(request_key.encode()).digest()[:8], "big") / 2 ** 64


def trial_of(model_dir: Path) -> Trial | None:
    """The trial the model's config names (None: none)."""
    parameters = read_config(model_dir / CONFIG_FILE).parameters
    if CANDIDATE_VERSION not in parameters:
        return None
    mode = parameters[CANDIDATE_MODE].string_value if CANDIDATE_MODE in parameters else ""
    if mode not in MODES:
        raise VersionError(f"{model_dir.name}: candidate_mode {mode!r} is not one of {', '.join(MODES)}")
    share = float(parameters[CANARY_SHARE].string_value) if CANARY_SHARE in parameters else 0.0
    return Trial(mode, int(parameters[CANDIDATE_VERSION].string_value), share)


def candidate_spec(model_dir: Path, trial: Trial, serving: ModelSpec) -> ModelSpec:
    """The spec the candidate runs with (its own recipe and labels), checked against the serving one."""
    if trial.version not in versions(model_dir):
        raise VersionError(f"{model_dir.name} has no version {trial.version} (built: "
                           f"{', '.join(map(str, versions(model_dir)))}); convert it first with "
                           f"`python -m convert model`")
    if str(trial.version) == serving.version:
        raise VersionError(f"{model_dir.name} version {trial.version} already serves; a candidate is another version")
    try:
        spec = version_spec(model_dir, trial.version)
    except SpecError as exc:
        raise VersionError(f"{model_dir.name} version {trial.version} cannot serve: {exc}") from None
    if spec.name != serving.name or spec.task != serving.task:
        raise VersionError(f"version {trial.version} of {model_dir.name} was built as {spec.name!r} answering "
                           f"{spec.task!r}; a candidate answers what the serving version does ({serving.task!r})")
    return spec


def candidates(repository: Repository) -> dict[str, tuple[Trial, ModelSpec]]:
    """Per face field, the trial its model's config names and the candidate's spec. Raises `VersionError` for a
    trial that cannot run (the repository is not served as it is)."""
    found = {}
    for name, spec in repository.specs.items():
        trial = trial_of(repository.path / name)
        if trial is None:
            continue
        if not tasks.is_head(spec.task):
            raise VersionError(f"{name} is a {spec.task} model; only a face head runs a candidate")
        found[spec.task] = (trial, candidate_spec(repository.path / name, trial, spec))
    return found


def same_input(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether two versions take the same crops (the candidate then runs on the serving version's batch)."""
    return (a.input_shape, a.colour, a.scale, a.offset, a.letterbox, a.crop) == (
        b.input_shape, b.colour, b.scale, b.offset, b.letterbox, b.crop)


# ---- the commands (`python -m convert shadow|canary|candidate-stop`) ----------------------------------------------

def start_trial(model_dir: Path, mode: str, version: int, share: float | None = None) -> Trial:
    """Run `version` as the model's candidate (replacing any trial); refused with nothing written when it cannot."""
    trial = checked_trial(model_dir, mode, version, share)
    _write(model_dir, {CANDIDATE_VERSION: str(version), CANDIDATE_MODE: mode,
                       **({CANARY_SHARE: repr(trial.share)} if mode == CANARY else {})})
    return trial


def checked_trial(model_dir: Path, mode: str, version: int, share: float | None = None) -> Trial:
    """The trial `start_trial` would write, or a `VersionError` saying why it cannot run (nothing written)."""
    serving = _serving_spec(model_dir)
    if not tasks.is_head(serving.task):
        raise VersionError(f"{model_dir.name} is a {serving.task} model; only a face head runs a candidate "
                           f"(promote its new version instead)")
    if mode == CANARY:
        if share is None or not 0 < share <= 1:
            raise VersionError(f"a canary's share is the fraction of requests the candidate answers, above 0 and at "
                               f"most 1 (--share 0.1), got {share}")
    elif share is not None:
        raise VersionError("a shadow answers no request: give --share to a canary only")
    trial = Trial(mode, version, share or 0.0)
    candidate_spec(model_dir, trial, serving)
    return trial


def stop_trial(model_dir: Path) -> Trial:
    """End the model's trial (the serving version alone answers and runs); the trial ended."""
    _serving_spec(model_dir)
    trial = trial_of(model_dir)
    if trial is None:
        raise VersionError(f"{model_dir.name} runs no candidate")
    _write(model_dir, {})
    return trial


def _serving_spec(model_dir: Path) -> ModelSpec:
    if not (model_dir / CONFIG_FILE).is_file():
        raise VersionError(f"{model_dir} is not a model folder (no {CONFIG_FILE}); give a model of the repository")
    if serving_version(model_dir) is None:
        raise VersionError(f"{model_dir.name} has no built version")
    return load_spec(model_dir)


def _write(model_dir: Path, parameters: dict[str, str]) -> None:
    """The configs with exactly these trial parameters, each written whole (the GPU variant first, as promote)."""
    for path in (model_dir / GPU_CONFIG_FILE, model_dir / CONFIG_FILE):
        if not path.is_file():
            continue
        config = read_config(path)
        for key in TRIAL_PARAMETERS:
            if key in config.parameters:
                del config.parameters[key]
        for key, value in parameters.items():
            config.parameters[key].string_value = value
        write_config(config, path)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What a field's serving version and its candidate said for one image, face by face, and each call's time."""

    field: str
    mode: str
    serving: ModelSpec
    candidate: ModelSpec
    answered_by_candidate: bool
    serving_values: list
    candidate_values: list
    serving_ms: float
    candidate_ms: float
