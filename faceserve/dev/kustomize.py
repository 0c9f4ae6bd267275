"""Render a kustomization of bentos/kubernetes/ without kubectl: `python -m faceserve.dev.kustomize DIR`.

The manifests are a plain kustomize layout (`kubectl apply -k bentos/kubernetes/overlays/gpu` works); this
renders the same objects where no kustomize binary exists, as in the tests. It knows the few features the
layout uses and refuses any other, so an edit it cannot follow fails loudly instead of rendering wrong:

- `resources`: YAML files and other kustomization directories;
- `patches` with a `path`: strategic merge patches, aimed by their kind and name. Lists merge on the same
  keys as Kubernetes (containers, env, volumes by `name`; volumeMounts by `mountPath`), new items first as
  kustomize puts them; other lists are replaced, as kustomize does for lists without a merge key;
- `images`: `name` -> `newName` / `newTag` for containers and init containers.

When kubectl is present, tests/integration/test_kubernetes.py checks that `kubectl kustomize` agrees.
A development tool: the bentos leave it out.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

KUSTOMIZATION = "kustomization.yaml"
SUPPORTED = {"apiVersion", "kind", "resources", "patches", "images"}
# x-kubernetes-patch-merge-key of the lists the layout patches (Kubernetes API: PodSpec, Container).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}


class KustomizeError(ValueError):
    pass


def render(directory: Path) -> list[dict]:
    """The objects of the kustomization in `directory`, patched, in the order their resources are listed."""
    directory = Path(directory)
    spec = yaml.safe_load((directory / KUSTOMIZATION).read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory / KUSTOMIZATION}: {', '.join(sorted(unknown))} not supported here")
    objects: list[dict] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else load(path)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path: FILE` is supported, not {patch}")
        for change in load(directory / patch["path"]):
            target = _find(objects, change)
            merged = merge(target, change)
            target.clear()
            target.update(merged)
    for image in spec.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                container["image"] = retag(container["image"], image)
    return objects


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _find(objects: list[dict], patch: dict) -> dict:
    matches = [obj for obj in objects if _key(obj) == _key(patch)]
    if len(matches) != 1:
        raise KustomizeError(f"patch for {_key(patch)} matches {len(matches)} objects")
    return matches[0]


def merge(base, patch, field: str | None = None):
    """A strategic merge patch of `patch` onto `base` (both plain YAML values)."""
    if isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise KustomizeError(f"patch directives ({', '.join(k for k in patch if k.startswith('$'))}) not supported")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = merge(base[key], value, key) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(base, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        changes = {item[key]: item for item in patch}
        merged = [merge(old, changes[old.get(key)]) if old.get(key) in changes else copy.deepcopy(old) for old in base]
        present = {old.get(key) for old in base}
        # kustomize puts the patch's new items first
        return [copy.deepcopy(item) for item in patch if item[key] not in present] + merged
    if isinstance(patch, list) and any(isinstance(item, dict) for item in patch):
        raise KustomizeError(f"`{field}`: a list of objects without a merge key known here")
    return copy.deepcopy(patch)


def _containers(obj: dict) -> list[dict]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def retag(reference: str, image: dict) -> str:
    """kustomize's `images` entry applied to one image reference (`name[:tag]`)."""
    name, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "")
    if name != image["name"]:
        return reference
    name = image.get("newName", name)
    tag = image.get("newTag", tag)
    return f"{name}:{tag}" if tag else name


def dump(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceserve.dev.kustomize", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a kustomization directory, e.g. bentos/kubernetes/overlays/cpu")
    args = parser.parse_args(argv)
    sys.stdout.write(dump(render(args.directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
