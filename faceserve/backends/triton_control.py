"""Driving a Triton server's model repository (explicit model control) when a model's serving version changes.

`python -m convert promote|rollback ... --triton-url URL` calls `load_beside` *before* it rewrites the model's
config: Triton is told (`load_model` with a config override) to hold the version about to serve beside the one
serving, so that whichever version a service's request pins (`TritonBackend` sends `model_version` on every call),
Triton has it loaded — before the services follow the rewritten config, while each worker drains the requests
that started on the old version, and after. The previous version stays loaded until the next promotion replaces
it: a rollback finds it there. One Triton serves every replica, so the command that changes the repository drives
it once; the services only follow (and refuse to pin a version Triton does not hold).

The override is Triton's own live config of the model (whatever backend, instance groups or GPU variant it was
loaded with) with two changes: the `version_policy` names both versions, and a tensor dim the two versions
disagree on becomes -1 (emotion's 64x64 and 48x48 crops), so that Triton takes either version's tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

from tritonclient.utils import InferenceServerException

from faceserve.models.repository import serving_version
from faceserve.models.versions import version_spec


class TritonControlError(RuntimeError):
    """Triton refused or could not be asked; nothing was written to the repository."""


def widened(loaded: list[int], version: tuple[int, ...]) -> list[int]:
    """Dims that take the tensors of the loaded config and of `version`: -1 where the two differ."""
    if len(loaded) != len(version):
        raise TritonControlError(f"a tensor of rank {len(version)} cannot be served beside one of rank "
                                 f"{len(loaded)} under one Triton config; serve the new version as a new model")
    return [a if a == b else -1 for a, b in zip(loaded, version)]


def beside_config(live: dict, keep: list[int], input_name: str, input_shape: tuple[int, ...],
                  outputs: dict[str, tuple[int, ...]]) -> dict:
    """`live` (the config Triton serves the model with) loading the versions `keep`, its tensors widened to take
    the new version's shapes too."""
    config = json.loads(json.dumps(live))
    config["version_policy"] = {"specific": {"versions": keep}}
    for tensor in config.get("input", []):
        if tensor["name"] == input_name:
            tensor["dims"] = widened([int(d) for d in tensor["dims"]], input_shape)
    for tensor in config.get("output", []):
        if tensor["name"] in outputs:
            tensor["dims"] = widened([int(d) for d in tensor["dims"]], outputs[tensor["name"]])
    return config


def holds(live: dict, config: dict) -> bool:
    """Whether the live config already loads `config`'s versions with its tensor dims."""
    def loaded(c: dict) -> tuple:
        return (sorted(int(v) for v in c.get("version_policy", {}).get("specific", {}).get("versions", [])),
                [(t["name"], [int(d) for d in t["dims"]]) for t in c.get("input", []) + c.get("output", [])])
    return loaded(live) == loaded(config)


def _client(url: str):
    from faceserve.backends.triton import parse_url
    protocol, address = parse_url(url)
    if protocol == "grpc":
        import tritonclient.grpc as client
    else:
        import tritonclient.http as client
    return protocol, client.InferenceServerClient(address)


def loaded_versions(url: str, name: str) -> list[int]:
    """The versions of `name` Triton holds READY (its repository index)."""
    protocol, client = _client(url)
    try:
        index = client.get_model_repository_index(as_json=True) if protocol == "grpc" else \
            client.get_model_repository_index()
    except InferenceServerException as exc:
        raise TritonControlError(f"Triton at {url} did not give its repository index: {exc.message()}") from None
    finally:
        client.close()
    models = index.get("models", []) if isinstance(index, dict) else index
    return sorted(int(m["version"]) for m in models
                  if m.get("name") == name and m.get("version") and m.get("state") == "READY")


def load_beside(url: str, model_dir: Path, version: int) -> list[int]:
    """Have Triton hold `version` of the model beside its serving version (read from the model's config, before
    the promotion rewrites it); returns the versions it holds READY. Raises TritonControlError (Triton refused or
    is unreachable) or VersionError (the version cannot serve) before anything is written."""
    name = model_dir.name
    keep = sorted({serving_version(model_dir), version})
    spec = version_spec(model_dir, version)
    protocol, client = _client(url)
    try:
        live = client.get_model_config(name, as_json=True)["config"] if protocol == "grpc" else \
            client.get_model_config(name)
        config = beside_config(live, keep, spec.input_name, spec.input_shape,
                               dict(zip(spec.output_names, spec.output_dims)))
        held = all(client.is_model_ready(name, str(v)) for v in keep)
        if not (held and holds(live, config)):  # a rollback finds both versions loaded: nothing to reload
            client.load_model(name, config=json.dumps(config))
        missing = [v for v in keep if not client.is_model_ready(name, str(v))]
    except InferenceServerException as exc:
        raise TritonControlError(f"Triton at {url} did not load {name} versions {keep}: "
                                 f"{(exc.message() or str(exc)).splitlines()[0]}") from None
    finally:
        client.close()
    if missing:
        raise TritonControlError(f"Triton at {url} loaded {name} but versions {missing} are not ready; "
                                 f"read its log")
    return keep
