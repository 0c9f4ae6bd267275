"""The CPU Kubernetes deployment played by podman (`podman kube play`) from the kustomize-rendered manifests
(bentos/kubernetes/overlays/cpu) with `make image`'s image: its replicas on one PostgreSQL (an image made from
Debian's postgresql package, bentos/image/base.sh), nginx in front, up, answering, one replica killed and replaced,
and down with nothing left.

What podman 4.3's kube play lacks, and how this test covers it (docs/deploy.md, "The Kubernetes manifests under podman"):
- Service, HorizontalPodAutoscaler, PodDisruptionBudget are no kinds it plays: nginx (faceserve.dev.cluster's, as in
  `make cluster`) stands in for the Service, fed by the readinessProbe the manifest declares; the autoscaler and
  the budget are checked offline (tests/integration/test_kubernetes.py).
- readinessProbe and startupProbe are not run, livenessProbe becomes a podman health check that needs systemd
  timers (absent here): the test asks each probe's path and port itself, as the kubelet would.
- `secret` volumes and Secret objects: the Secret `faceserve` becomes a podman secret (secretKeyRef works) and its
  api-keys file a hostPath volume at the same mount path.
- pod-level securityContext (runAsUser, runAsGroup, fsGroup, runAsNonRoot) is not read: the same user and group are
  set on the container, where kube play reads them.
- This machine has no container network: every pod runs with hostNetwork, so each replica is a Pod of its own on
  its own port (BENTOML_PORT), rather than one Deployment whose replicas would all bind port 3000; and kube play
  refuses `ports` (port mappings) beside hostNetwork, so the probes' named port `http` is resolved to that number.
- preStop hooks are not run (podman stops with SIGTERM at once); terminationGracePeriodSeconds is kept.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from faceserve.dev.cluster.nginx import Nginx, NginxConfig
from faceserve.dev.cluster.readiness import ReadinessWatch
from faceserve.dev.kustomize import render
from faceserve.settings import Settings
from tests import containers
from tests.containers import podman
from tests.support import LOG_DIR, ROOT, free_port

pytestmark = pytest.mark.skipif(containers.unavailable() is not None, reason=str(containers.unavailable()))

OVERLAY = ROOT / "bentos" / "kubernetes" / "overlays" / "cpu"
POSTGRES_IMAGE = "localhost/faceserve-postgres:bookworm"
KEY = "kube-play-test-key"
HEADERS = {"X-API-Key": KEY}
PLAY_TIMEOUT_S = 300
REPLACE_TIMEOUT_S = 180
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def manifest_deployment() -> dict:
    (deployment,) = [o for o in render(OVERLAY) if o["kind"] == "Deployment" and o["metadata"]["name"] == "faceserve"]
    return deployment


def replica_pod(deployment: dict, name: str, port: int, image: str, keys_dir: Path) -> dict:
    """The Deployment's pod template as one Pod kube play runs here (the changes: the module's docstring)."""
    template = copy.deepcopy(deployment["spec"]["template"])
    spec = template["spec"]
    spec["hostNetwork"] = True
    pod_security = spec.pop("securityContext")
    (container,) = spec["containers"]
    container["image"] = image
    container["env"].append({"name": "BENTOML_PORT", "value": str(port)})
    named = {declared["name"]: port for declared in container.pop("ports")}
    for probe in PROBES:
        get = container[probe]["httpGet"]
        get["port"] = named.get(get["port"], get["port"])
    container["securityContext"].update(runAsUser=pod_security["runAsUser"], runAsGroup=pod_security["runAsGroup"])
    for volume in spec["volumes"]:
        if "secret" in volume:
            volume.pop("secret")
            volume["hostPath"] = {"path": str(keys_dir), "type": "Directory"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": template["metadata"]["labels"]},
            "spec": spec}


def postgres_pod(name: str, port: int) -> dict:
    # initdb's defaults in the image's C locale: an SQL_ASCII database, as a hand-made one often is (the store
    # asks for UTF-8 on every connection: tests/integration/test_gallery_store.py's SQL_ASCII test)
    data = "/var/lib/postgresql/data"
    script = (f"install -d -o postgres {data} && runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D {data} "
              f"-A trust -U faceserve >/dev/null && exec runuser -u postgres -- /usr/lib/postgresql/15/bin/postgres "
              f"-D {data} -h 127.0.0.1 -p {port} -k /tmp")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"hostNetwork": True, "containers": [{
                "name": "postgres", "image": POSTGRES_IMAGE, "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": data}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]}}


def probe_url(container: dict, probe: str) -> str:
    get = container[probe]["httpGet"]
    return f"http://127.0.0.1:{get['port']}{get['path']}"


def wait_for(url: str, timeout: float = containers.READY_TIMEOUT_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


def postgres_accepts(port: int, timeout: float = 120) -> None:
    import psycopg
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(f"postgresql://faceserve@127.0.0.1:{port}/postgres", connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def play(path: Path) -> None:
    podman("kube", "play", "--network", "host", str(path), timeout=PLAY_TIMEOUT_S)


def leftovers(prefix: str) -> list[str]:
    found = []
    for kind, fmt in (("pod", "{{.Name}}"), ("container", "{{.Names}}"), ("volume", "{{.Name}}"),
                      ("secret", "{{.Name}}")):
        listing = podman(kind, "ls", "--format", fmt, *(["-a"] if kind == "container" else []), check=False).stdout
        found += [f"{kind} {name}" for name in listing.split() if name.startswith(prefix)]
    return found


def pause_images() -> set[str]:
    """The images of pods' pause processes, which podman builds itself at the first pod."""
    listing = podman("images", "--filter", "reference=localhost/podman-pause", "--format", "{{.Repository}}:{{.Tag}}")
    return set(listing.stdout.split())


@pytest.fixture(scope="module")
def postgres_image():
    had, pauses = containers.exists("image", POSTGRES_IMAGE), pause_images()
    if not had:
        done = podman_base(POSTGRES_IMAGE, "postgresql-15")
        assert done.returncode == 0, done.stderr[-3000:]
    yield POSTGRES_IMAGE
    for made in pause_images() - pauses:
        podman("rmi", "-f", made, check=False)
    if not had:
        podman("rmi", "-f", POSTGRES_IMAGE, check=False)


def last_traceback(pod: dict) -> str:
    """The last traceback in a replica's log: what a 500 from it was."""
    container = pod["spec"]["containers"][0]["name"]
    done = podman("logs", f"{pod['metadata']['name']}-{container}", check=False)
    log = done.stdout + done.stderr
    return log[log.rfind("Traceback"):][-2500:] if "Traceback" in log else "(no traceback)"


def podman_base(image: str, packages: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(containers.IMAGE_DIR / "base.sh"), image, packages], env=containers.ENV,
                          capture_output=True, text=True, timeout=containers.BUILD_TIMEOUT_S)


def test_the_cpu_manifests_play_answer_survive_a_replica_kill_and_go_down_clean(built_image, postgres_image,
                                                                                fixtures, tmp_path):
    image, _ = built_image
    prefix = containers.unique("faceserve-kube")
    deployment = manifest_deployment()
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    keys_dir = tmp_path / "secrets"
    keys_dir.mkdir()
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    (keys_dir / "api-keys").write_text(f"kube-play analyze,enrol,admin sha256:{digest}\n")
    keys_dir.chmod(0o755)
    (keys_dir / "api-keys").chmod(0o644)
    pg_port = free_port()
    # podman 4.3 reads a secretKeyRef's secret as the Secret's `data` alone: a JSON object of base64 values
    secret = {"gallery-url": base64.b64encode(f"postgresql://faceserve@127.0.0.1:{pg_port}/postgres".encode()).decode()}
    (tmp_path / "secret.json").write_text(json.dumps(secret))
    ports = [free_port() for _ in range(replicas)]
    pods = [replica_pod(deployment, f"{prefix}-faceserve-{i}", port, image, keys_dir) for i, port in enumerate(ports)]
    files = []
    for pod in [postgres_pod(f"{prefix}-postgres", pg_port), *pods]:
        files.append(tmp_path / f"{pod['metadata']['name']}.yaml")
        files[-1].write_text(yaml.safe_dump(pod))
    settings = Settings.from_env()
    try:
        # the Secret's name is the manifest's; the run's prefix marks it for the clean-up check
        podman("secret", "create", "faceserve", str(tmp_path / "secret.json"))
        play(files[0])
        postgres_accepts(pg_port)
        for path in files[1:]:
            play(path)
        container = pods[0]["spec"]["containers"][0]
        for pod in pods:
            served = pod["spec"]["containers"][0]
            wait_for(probe_url(served, "startupProbe"))
            wait_for(probe_url(served, "readinessProbe"))
            assert httpx.get(probe_url(served, "livenessProbe"), timeout=5).status_code == 200
        upstreams = {f"127.0.0.1:{port}": f"http://127.0.0.1:{port}" for port in ports}
        with Nginx(NginxConfig(port=free_port(), upstreams=tuple(upstreams), log_dir=LOG_DIR / prefix,
                               max_body_bytes=settings.limits.max_body_bytes,
                               route_body_bytes=settings.route_body_bytes)) as nginx, \
                ReadinessWatch(upstreams, nginx.reroute):
            client = httpx.Client(base_url=nginx.url, headers=HEADERS, timeout=120)
            obama = sorted((fixtures / "identity" / "enroll" / "obama").iterdir())
            identity = client.post("/identities/create", json={"name": "obama", "metadata": {}}).json()["id"]
            added = client.post("/identities/add_faces", data={"identity_id": identity},
                                files=[("images", (p.name, p.read_bytes(), "image/jpeg")) for p in obama])
            assert added.status_code == 200, added.text
            probe = fixtures / "identity" / "probe" / "obama1.jpg"

            def identified() -> list[str] | None:
                """The identities found in the probe photo; None for nginx's 503 to retry (a request it had sent to
                a replica as that one was killed: docs/deploy.md, the kill test of the local cluster)."""
                answer = client.post("/identify", files={"image": (probe.name, probe.read_bytes(), "image/jpeg")})
                if answer.status_code == 503 and answer.json()["error"] == "unavailable":
                    assert int(answer.headers["Retry-After"]) >= 1
                    return None
                assert answer.status_code == 200, (answer.text, *map(last_traceback, pods))
                return [face["identity"]["id"] for face in answer.json()["faces"] if face["identity"]]

            photo = (fixtures / "images" / "solvay_conference.jpg").read_bytes()
            analysis = client.post("/analyze", files={"image": ("s.jpg", photo, "image/jpeg")})
            assert analysis.status_code == 200 and len(analysis.json()["faces"]) >= 5
            assert httpx.post(f"{nginx.url}/models", timeout=30).json()["error"] == "unauthorized"
            for _ in range(2 * replicas):  # least_conn sends consecutive requests to either replica
                assert identified() == [identity]

            # kill -9 of one replica's service from the host, as when it crashes (`podman kill` would count as
            # stopped by hand); its restart policy, the pod template's Always, replaces it
            killed = f"{prefix}-faceserve-0-{container['name']}"
            before = int(podman("inspect", "--format", "{{.State.Pid}}", killed).stdout)
            os.kill(before, signal.SIGKILL)
            answers, replaced = [], False
            deadline = time.monotonic() + REPLACE_TIMEOUT_S
            while not replaced and time.monotonic() < deadline:
                answers.append(identified())  # the other replica answers meanwhile, from the shared store
                pid = podman("inspect", "--format", "{{.State.Pid}}", killed).stdout.strip()
                with contextlib.suppress(httpx.HTTPError):
                    replaced = pid not in ("0", str(before)) and httpx.get(
                        probe_url(container, "readinessProbe"), timeout=2).status_code == 200
                time.sleep(0.25)
            assert replaced, f"{killed} was not replaced: {containers.logs(killed)}"
            assert answers.count([identity]) >= 1 and answers.count(None) <= 2, answers
            assert all(answer in ([identity], None) for answer in answers), answers
            for _ in range(2 * replicas):
                assert identified() == [identity]
            direct = httpx.post(f"http://127.0.0.1:{ports[0]}/identify", headers=HEADERS, timeout=120,
                                files={"image": (probe.name, probe.read_bytes(), "image/jpeg")})
            assert [f["identity"]["id"] for f in direct.json()["faces"] if f["identity"]] == [identity]
    finally:
        for path in reversed(files):
            podman("kube", "down", str(path), check=False, timeout=PLAY_TIMEOUT_S)
        podman("secret", "rm", "faceserve", check=False)
    assert leftovers(prefix) == [] and "faceserve" not in podman("secret", "ls", "--format", "{{.Name}}").stdout.split()
