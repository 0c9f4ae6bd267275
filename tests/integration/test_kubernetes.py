"""The Kubernetes manifests (bentos/kubernetes/), offline: every rendered object validates against the
Kubernetes API schemas (kubernetes-validate ships them), and probes, ports, environment variables, images and
security agree with what the service, Triton, the bentos and the benchmarks really use - each read from its
source, not from a second list. That the probe paths answer on the real servers is in test_cluster.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from unittest import mock

import kubernetes_validate
import pytest
import yaml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.container.generate import BENTO_PATH, BENTO_UID_GID
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from faceserve.dev.kustomize import KustomizeError, render
from faceserve.dev.triton_local.server import DEFAULT_PORTS, LIVE_PATH, READY_PATH
from faceserve.http import OPEN_PATHS
from faceserve.settings import STORE_ENV, Settings
from tests.manifests import (KUBERNETES, OVERLAYS, SERVICE, TRITON, container, env, find, pod_spec, port_number,
                             probes, rendered)
from tests.support import ROOT

OLDEST_KUBERNETES = "1.28.0"  # docs/deploy.md
# Settings the manifests set before the service reads them: name -> who will read it. A test fails once
# faceserve.settings reads one, so that it leaves this list.
BENCHMARK_SCENARIO = {"cpu": "service-embedded", "gpu": "service-triton-grpc"}


def kubernetes_versions() -> list[str]:
    return sorted({v for v in all_versions() if Version(v) >= Version(OLDEST_KUBERNETES)}, key=Version)


def all_objects() -> list[tuple[str, dict]]:
    return [(overlay, obj) for overlay in OVERLAYS for obj in rendered(overlay)]


def pod_templates(objects: list[dict]) -> list[dict]:
    return [o["spec"]["template"] for o in objects if o["kind"] == "Deployment"]


def all_containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def settings_names() -> set[str]:
    """Every environment variable faceserve.settings reads, recorded while it reads them."""
    read: set[str] = set()

    class Recording(dict):
        def get(self, key, default=None):
            read.add(key)
            return default

    with mock.patch.object(os, "environ", Recording()):
        Settings.from_env()
    return read


def latest_benchmark(scenario: str) -> dict:
    """The newest committed benchmark run that measured `scenario` (runs of single scenarios sit beside full ones)."""
    for path in sorted((ROOT / "benchmarks" / "results").glob("*/results.json"), reverse=True):
        run = json.loads(path.read_text())
        if any(row["scenario"] == scenario for row in run["rows"]):
            return run
    raise AssertionError(f"no committed benchmark run measured {scenario}")


def quantity_mib(value: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value) / 2**20


# ---- every object is a valid Kubernetes object ---------------------------------------------------------


@pytest.mark.parametrize("version", kubernetes_versions())
def test_every_rendered_object_validates(version):
    for overlay, obj in all_objects():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{overlay} {obj['kind']}/{obj['metadata']['name']} on Kubernetes {version}: "
                        f"{'.'.join(map(str, error.path))}: {error.message}")


def test_validator_catches_a_wrong_field():
    broken = rendered("cpu")
    probe = container(broken, SERVICE)["readinessProbe"]["httpGet"]
    deployment = find(broken, "Deployment", SERVICE)
    probe["paht"] = probe.pop("path")
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(deployment, kubernetes_versions()[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_agrees_with_kustomize(overlay):
    tool = shutil.which("kubectl") or shutil.which("kustomize")
    if tool is None:
        pytest.skip("neither kubectl nor kustomize is installed: the Python renderer is checked alone")
    command = [tool, "kustomize"] if tool.endswith("kubectl") else [tool, "build"]
    done = subprocess.run([*command, str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr

    def by_key(objects):
        return {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert by_key(rendered(overlay)) == by_key(yaml.safe_load_all(done.stdout))


def test_renderer_refuses_what_it_does_not_follow(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        render(tmp_path)


# ---- the service ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_probes_ask_what_the_service_answers(overlay):
    objects = rendered(overlay)
    service = container(objects, SERVICE)
    port = BentoMLContainer.http.port.get()  # the bento image runs `bentoml serve` on BentoML's default port
    assert port_number(service, "http") == port
    found = probes(service)
    assert set(found) == {"startupProbe", "livenessProbe", "readinessProbe"}
    assert found["readinessProbe"][0] == "/readyz"
    # The kubelet sends no API key and must never meet the concurrency limit.
    assert {path for path, _ in found.values()} <= OPEN_PATHS
    assert {number for _, number in found.values()} == {port}
    # Liveness must not depend on the backend: a Triton outage would restart every replica.
    assert found["livenessProbe"][0] != "/readyz" and found["startupProbe"][0] != "/readyz"
    (exposed,) = find(objects, "Service", SERVICE)["spec"]["ports"]
    assert port_number(service, exposed["targetPort"]) == port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_environment_is_what_the_service_reads(overlay):
    objects = rendered(overlay)
    service = container(objects, SERVICE)
    variables = env(service)
    ours = {name for name in variables if name.startswith("FACESERVE_")}
    assert ours <= settings_names(), "a FACESERVE_* variable the service never reads"
    assert "FACESERVE_BACKEND" in ours
    # as the bentos set them
    bentofile = yaml.safe_load((ROOT / "bentos" / overlay / "bentofile.yaml").read_text())
    baked = {e["name"]: e["value"] for e in bentofile["envs"]}
    for name in ("MALLOC_ARENA_MAX", "BENTOML_DO_NOT_TRACK"):
        assert variables[name]["value"] == baked[name]
    # one worker per requested core
    assert variables["FACESERVE_WORKERS"]["value"] == service["resources"]["requests"]["cpu"]
    # Secrets: the API keys as a file from the Secret, the store's URL from the same Secret; never a literal.
    assert "FACESERVE_API_KEYS" not in variables
    keys_file = variables["FACESERVE_API_KEYS_FILE"]["value"]
    volumes = {v["name"]: v for v in pod_spec(objects, SERVICE)["volumes"]}
    (mount,) = [m for m in service["volumeMounts"] if keys_file.startswith(m["mountPath"] + "/")]
    secret = volumes[mount["name"]]["secret"]
    assert mount.get("readOnly") is True
    assert keys_file[len(mount["mountPath"]) + 1:] in {item["path"] for item in secret["items"]}
    store = variables[STORE_ENV]["valueFrom"]["secretKeyRef"]
    assert store["name"] == secret["secretName"] and "value" not in variables[STORE_ENV]


def test_cpu_topology_runs_the_embedded_backend_with_an_autoscaler_and_a_budget():
    objects = rendered("cpu")
    assert env(container(objects, SERVICE))["FACESERVE_BACKEND"]["value"] == "onnxruntime"
    assert not [o for o in objects if o["metadata"]["name"] == TRITON]
    labels = find(objects, "Deployment", SERVICE)["spec"]["template"]["metadata"]["labels"]
    hpa = find(objects, "HorizontalPodAutoscaler", SERVICE)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVICE}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = find(objects, "PodDisruptionBudget", SERVICE)["spec"]
    assert selects(pdb["selector"]["matchLabels"], labels) and pdb["maxUnavailable"] == 1


# ---- Triton (GPU topology) -------------------------------------------------------------------------------


def test_triton_runs_the_ngc_image_on_a_gpu_with_the_gpu_configs():
    objects = rendered("gpu")
    triton = container(objects, TRITON)
    compose = yaml.safe_load((ROOT / "bentos" / "gpu" / "docker-compose.yaml").read_text())["services"]["triton"]
    assert triton["image"] == compose["image"] and triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert set(compose["command"]) <= set(triton["args"])  # the same server as the compose file
    assert "--model-config-name=gpu" in triton["args"]
    # explicit model control: `convert promote --triton-url` loads a version beside the serving one (docs/models.md)
    assert {"--model-control-mode=explicit", "--load-model=*"} <= set(triton["args"])
    resources = triton["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    # the service and every other pod stay off GPUs
    for pod in pod_templates(objects):
        for other in all_containers(pod["spec"]):
            if other is not triton and other["name"] != TRITON:
                assert "nvidia.com/gpu" not in json.dumps(other.get("resources", {}))


def test_model_repository_reaches_triton_from_the_gpu_bento():
    objects = rendered("gpu")
    triton, pod = container(objects, TRITON), pod_spec(objects, TRITON)
    (repository,) = [a.split("=", 1)[1] for a in triton["args"] if a.startswith("--model-repository=")]
    (mount,) = [m for m in triton["volumeMounts"] if m["mountPath"] == repository]
    assert mount["readOnly"] is True
    (copier,) = pod["initContainers"]
    assert copier["image"] == container(objects, SERVICE)["image"] == "faceserve-gpu:latest"
    # the bento image holds the bento at BENTO_PATH, its sources (model_repository/ included) under src/
    assert copier["command"][-2:] == [f"{BENTO_PATH}/src/model_repository/.", f"{repository}/"]
    (target,) = [m for m in copier["volumeMounts"] if m["mountPath"] == repository]
    assert target["name"] == mount["name"] and "emptyDir" in {v["name"]: v for v in pod["volumes"]}[mount["name"]]


def test_triton_probes_and_ports_are_tritons():
    objects = rendered("gpu")
    triton = container(objects, TRITON)
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == DEFAULT_PORTS
    found = probes(triton)
    assert found["readinessProbe"] == (READY_PATH, DEFAULT_PORTS["http"])
    assert found["livenessProbe"] == found["startupProbe"] == (LIVE_PATH, DEFAULT_PORTS["http"])


def test_service_reaches_triton_over_grpc_inside_the_cluster_only():
    objects = rendered("gpu")
    triton = container(objects, TRITON)
    service = find(objects, "Service", TRITON)
    triton_labels = find(objects, "Deployment", TRITON)["spec"]["template"]["metadata"]["labels"]
    service_labels = find(objects, "Deployment", SERVICE)["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], triton_labels)
    (grpc,) = service["spec"]["ports"]
    assert port_number(triton, grpc["targetPort"]) == DEFAULT_PORTS["grpc"]
    assert env(container(objects, SERVICE))["FACESERVE_BACKEND"]["value"] == f"grpc://{TRITON}:{grpc['port']}"
    # never outside the cluster: no node port, load balancer, host port, host network or Ingress anywhere
    assert not [o for o in objects if o["kind"] == "Ingress"]
    for obj in objects:
        if obj["kind"] == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP"
            assert "externalIPs" not in obj["spec"]
    for pod in pod_templates(objects):
        assert not pod["spec"].get("hostNetwork")
        assert all("hostPort" not in p for c in all_containers(pod["spec"]) for p in c.get("ports", []))
    # and inside it, only the service's pods, only on gRPC; Triton calls nothing
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"
                 and selects(o["spec"]["podSelector"]["matchLabels"], triton_labels)]
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"} and spec["egress"] == []
    (rule,) = spec["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}  # no namespaceSelector or ipBlock
    assert selects(source["podSelector"]["matchLabels"], service_labels)
    assert not selects(source["podSelector"]["matchLabels"], triton_labels)
    assert [(p["protocol"], p["port"]) for p in rule["ports"]] == [("TCP", DEFAULT_PORTS["grpc"])]


# ---- both: security and sizing ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged(overlay):
    objects = rendered(overlay)
    for template in pod_templates(objects):
        pod = template["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0 and context["runAsGroup"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        # a Service named faceserve would inject FACESERVE_* variables, the namespace of our settings
        assert pod["enableServiceLinks"] is False
        for each in all_containers(pod):
            assert each["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                               "capabilities": {"drop": ["ALL"]}}
    # the bento image's own user, so that its files are ours
    assert pod_spec(objects, SERVICE)["securityContext"]["runAsUser"] == BENTO_UID_GID


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_cover_the_measured_figures(overlay):
    objects = rendered(overlay)
    for template in pod_templates(objects):
        for each in all_containers(template["spec"]):
            assert {"cpu", "memory"} <= set(each["resources"]["requests"]), each["name"]
            assert "memory" in each["resources"]["limits"], each["name"]
    benchmark = latest_benchmark(BENCHMARK_SCENARIO[overlay])
    rows = [r for r in benchmark["rows"] if r["scenario"] == BENCHMARK_SCENARIO[overlay]]
    # the service's whole tree (arbiter and workers) at its peak, at any concurrency measured (MiB)
    peak = max(sum(mb for process, mb in r["peak_rss_mb"].items() if process.startswith("bentoml")) for r in rows)
    service = container(objects, SERVICE)
    assert quantity_mib(service["resources"]["requests"]["memory"]) >= peak
    # the startup probe allows at least ten measured cold starts
    cold_start_s = benchmark["scenarios"][BENCHMARK_SCENARIO[overlay]]["info"]["cold_start_s"]
    startup = service["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 10 * cold_start_s
