"""The Kubernetes manifests (bentos/kubernetes/) as rendered objects, for the tests that check them."""

from __future__ import annotations

import copy
import functools

from faceserve.dev.kustomize import render
from tests.support import ROOT

KUBERNETES = ROOT / "bentos" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
SERVICE, TRITON = "faceserve", "triton"  # the Deployments' names
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


@functools.cache
def _rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(render(KUBERNETES / "overlays" / overlay))


def rendered(overlay: str) -> list[dict]:
    """The overlay's objects, a copy a test may change."""
    return copy.deepcopy(list(_rendered(overlay)))


def find(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(objects: list[dict], deployment: str) -> dict:
    return find(objects, "Deployment", deployment)["spec"]["template"]["spec"]


def container(objects: list[dict], deployment: str) -> dict:
    """The Deployment's main container (named after it)."""
    (found,) = [c for c in pod_spec(objects, deployment)["containers"] if c["name"] == deployment]
    return found


def env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def port_number(container: dict, port: int | str) -> int:
    """A probe's or Service's port, named or numbered, as the container's port number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def probes(container: dict) -> dict[str, tuple[str, int]]:
    """{probe kind: (path, port number)} of the container's HTTP probes."""
    return {kind: (container[kind]["httpGet"]["path"], port_number(container, container[kind]["httpGet"]["port"]))
            for kind in PROBES if kind in container}
