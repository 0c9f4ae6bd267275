"""The local multi-instance deployment (faceserve.cluster): real nginx in front of two real `bentoml serve`
instances on one real local Triton. One cluster for the module; the kill test restarts an instance, so the
tests after it see it back.

Which instance answered a request is read from nginx's access log, by the X-Request-Id nginx returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from faceserve import devserver
from faceserve.cluster import Cluster
from faceserve import photos
from tests.hostile_corpus import good_jpeg
from tests.manifests import OVERLAYS, SERVICE, TRITON, container, probes, rendered
from tests.support import LOG_DIR, ROOT, free_port, jpeg

pytestmark = pytest.mark.triton

INSTANCES = 2
BODY_LIMIT = 3_000_000  # FACESERVE_MAX_BODY_BYTES of every instance; nginx must take it over
API_KEY = "cluster-test-key"
AUTH = {"X-API-Key": API_KEY}
CONCURRENCY = 16


@pytest.fixture(scope="module")
def cluster(repository):
    env = {"FACESERVE_MAX_BODY_BYTES": str(BODY_LIMIT), "FACESERVE_API_KEYS": API_KEY}
    with Cluster(INSTANCES, backend="triton", env=env, log_dir=LOG_DIR / f"faceserve-cluster-{os.getpid()}") as cluster:
        yield cluster


def access_log(cluster: Cluster) -> dict[str, dict]:
    """nginx's access log by request id."""
    lines = cluster.nginx.access_log.read_text().splitlines()
    return {entry["request_id"]: entry for entry in map(json.loads, lines)}


def upstreams(entry: dict) -> list[str]:
    """The instances nginx tried for one request, in order ("a, b" when it moved on to b)."""
    return [a.strip() for a in entry["upstream"].replace(" : ", ", ").split(",") if a.strip() not in ("", "-")]


def analyze(client: httpx.Client, image: bytes) -> httpx.Response:
    return client.post("/analyze", files={"image": ("a.jpg", image, "image/jpeg")})


def flatten(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from flatten(item, f"{path}[{index}]")
    else:
        yield path, value


def same_faces(answer: dict, reference: dict) -> bool:
    """Same boxes, labels and numbers (to 1e-3: a batch's company may move the last float bits)."""
    got, want = dict(flatten(answer["faces"])), dict(flatten(reference["faces"]))
    return got.keys() == want.keys() and all(
        got[k] == pytest.approx(v, abs=1e-3) if isinstance(v, float) else got[k] == v for k, v in want.items())


@pytest.fixture(scope="module")
def reference(cluster) -> dict:
    """The answer for the test photo, straight from one instance."""
    with httpx.Client(base_url=cluster.instances[0].url, headers=AUTH, timeout=30) as client:
        answer = analyze(client, good_jpeg()).json()
    assert len(answer["faces"]) == 1 and answer["faces"][0]["emotion"]["label"] == "happy"
    return answer


def test_requests_are_spread_over_every_instance(cluster, reference):
    with httpx.Client(base_url=cluster.url, headers=AUTH, timeout=30) as client:
        responses = [analyze(client, good_jpeg()) for _ in range(4 * INSTANCES)]
    assert all(r.status_code == 200 and same_faces(r.json(), reference) for r in responses)
    log = access_log(cluster)
    served_by = [upstreams(log[r.headers["x-request-id"]]) for r in responses]
    assert all(len(tried) == 1 for tried in served_by)  # nobody failed over
    assert {tried[0] for tried in served_by} == {i.address for i in cluster.instances}


def test_health_through_nginx_needs_no_key_and_the_rest_does(cluster):
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        refused = analyze(client, good_jpeg())
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"


@dataclasses.dataclass
class Outcome:
    phase: str  # what had happened to the victim when the request was sent
    request_id: str | None
    status: int  # 0: no HTTP answer at all
    body: dict | None


async def load_while(cluster: Cluster, victim, image: bytes) -> list[Outcome]:
    """Analyze requests at CONCURRENCY through nginx while `victim` is killed (`kill -9` of its whole tree),
    started again, and until it has answered requests sent after its restart."""
    outcomes: list[Outcome] = []
    phase = "before"
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async with httpx.AsyncClient(base_url=cluster.url, headers=AUTH, timeout=60, limits=limits) as client:
        async def user():
            while not stop.is_set():
                sent_in = phase
                try:
                    response = await client.post("/analyze", files={"image": ("a.jpg", image, "image/jpeg")})
                except httpx.HTTPError:
                    outcomes.append(Outcome(sent_in, None, 0, None))
                    continue
                outcomes.append(Outcome(sent_in, response.headers.get("x-request-id"), response.status_code,
                                        response.json()))

        async def answered(count: int, *, phase_of: str | None = None) -> None:
            while sum(1 for o in outcomes if phase_of in (None, o.phase)) < count:
                await asyncio.sleep(0.05)

        async def victim_answered(count: int) -> None:
            """Requests sent after the restart that the victim answered; bounded by requests, not time."""
            while len(outcomes) < 5000:
                log = access_log(cluster)
                served = [o for o in outcomes if o.phase == "restarted" and o.request_id in log
                          and upstreams(log[o.request_id])[-1:] == [victim.address] and o.status == 200]
                if len(served) >= count:
                    return
                await asyncio.sleep(0.2)

        users = [asyncio.create_task(user()) for _ in range(CONCURRENCY)]
        loop = asyncio.get_running_loop()
        try:
            await answered(60)
            await loop.run_in_executor(None, victim.kill)
            phase = "killed"
            await answered(60, phase_of="killed")
            phase = "restarting"
            await loop.run_in_executor(None, victim.start)  # the load goes on while it starts
            phase = "restarted"
            await victim_answered(10)
        finally:
            stop.set()
            await asyncio.gather(*users)
    return outcomes


def large_photo() -> bytes:
    """A 2048x2048 photo of one face: decoding it keeps each request on its instance long enough that some
    are in flight on the victim when it dies (with the small photo the client's own work dominates)."""
    from PIL import Image
    return jpeg(np.asarray(Image.fromarray(photos.astronaut()).resize((2048, 2048))))


def test_kill_9_of_one_instance_under_load(cluster):
    victim, survivor = cluster.instances
    image = large_photo()
    with httpx.Client(base_url=victim.url, headers=AUTH, timeout=30) as client:
        reference = analyze(client, image).json()
    assert len(reference["faces"]) == 1 and reference["faces"][0]["emotion"]["label"] == "happy"
    outcomes = asyncio.run(load_while(cluster, victim, image))
    log = access_log(cluster)
    failed = [o for o in outcomes if o.status != 200]
    by_phase = {p: sum(1 for o in outcomes if o.phase == p) for p in ("before", "killed", "restarting", "restarted")}
    print(f"\n{len(outcomes)} requests {by_phase}; failed: {len(failed)} "
          f"{sorted((o.phase, o.status) for o in failed)}")

    assert all(o.status != 0 for o in outcomes), "every request got an HTTP answer from nginx"
    # Every answer given is the right one.
    assert all(same_faces(o.body, reference) for o in outcomes if o.status == 200)
    # Only requests in flight on the victim when it died failed: sent before the kill, to the victim,
    # answered by nginx with 503 (its 502) in the service's error shape and with Retry-After.
    for outcome in failed:
        assert outcome.phase == "before", outcome
        assert outcome.status in (502, 503) and outcome.body["error"] == "unavailable", outcome
        assert upstreams(log[outcome.request_id]) == [victim.address], log[outcome.request_id]
    assert 1 <= len(failed) <= CONCURRENCY  # at most one per client, each in flight on the victim
    # Once it was dead, requests nginx sent the victim were passed on: refused connections are safe to retry.
    moved = [o for o in outcomes if o.phase == "killed" and upstreams(log[o.request_id])[0] == victim.address]
    assert all(upstreams(log[o.request_id]) == [victim.address, survivor.address] for o in moved)
    # Back after its restart.
    restarted = [o for o in outcomes if o.phase == "restarted" and upstreams(log[o.request_id])[-1:] == [victim.address]]
    assert len([o for o in restarted if o.status == 200]) >= 10


def json_body_of_size(size: int) -> bytes:
    """A JSON analyze request of exactly `size` bytes (its image is not one: the service answers 400)."""
    frame = b'{"image_base64": "%s"}'
    return frame.replace(b"%s", b"A" * (size - len(frame) + 2))


def test_body_limit_is_the_services_and_nginx_applies_it(cluster):
    limit = cluster.instance_settings().limits.max_body_bytes
    assert limit == BODY_LIMIT
    headers = {**AUTH, "content-type": "application/json"}
    over, at_limit = json_body_of_size(limit + 1), json_body_of_size(limit)
    assert (len(over), len(at_limit)) == (limit + 1, limit)
    with httpx.Client(headers=headers, timeout=30) as client:
        refused = client.post(f"{cluster.url}/analyze", content=over)
        passed = client.post(f"{cluster.url}/analyze", content=at_limit)
        by_instance = client.post(f"{cluster.instances[0].url}/analyze", content=over)
    log = access_log(cluster)
    assert refused.status_code == 413 and refused.json()["error"] == "body_too_large"
    assert str(limit) in refused.json()["message"]
    assert upstreams(log[refused.headers["x-request-id"]]) == []  # nginx answered; no instance was busy
    # One byte less reaches an instance, which finds no image in it: the same limit on both sides.
    assert passed.status_code == 400 and passed.json()["error"] != "body_too_large"
    assert upstreams(log[passed.headers["x-request-id"]])
    assert by_instance.status_code == 413 and by_instance.json()["error"] == "body_too_large"


def test_logs_hold_no_keys(cluster):
    secret_in_query = "query-secret-0451"
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        response = client.post(f"/analyze?api_key={secret_in_query}", headers={"Authorization": f"Bearer {API_KEY}"},
                               files={"image": ("a.jpg", good_jpeg(), "image/jpeg")})
    assert response.status_code == 200
    entry = access_log(cluster)[response.headers["x-request-id"]]
    assert entry["path"] == "/analyze" and entry["status"] == 200
    for log in (cluster.nginx.access_log, cluster.nginx.error_log):
        text = log.read_text() if log.exists() else ""
        assert API_KEY not in text and secret_in_query not in text


def test_nginx_workers_are_unprivileged(cluster):
    workers = cluster.nginx.worker_pids()
    assert workers
    for pid in workers:
        uid = int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("Uid:")))
        assert uid != 0 if os.geteuid() == 0 else uid == os.geteuid()


def service_probes() -> dict[str, str]:
    """{probe kind: path} of the service container, the same in every overlay (test_kubernetes checks more)."""
    (found,) = {tuple((kind, path) for kind, (path, _) in probes(container(rendered(o), SERVICE)).items())
                for o in OVERLAYS}
    return dict(found)


def test_kubernetes_probes_answer_on_the_real_servers(cluster):
    for instance in cluster.instances:
        for kind, path in service_probes().items():
            assert httpx.get(instance.url + path, timeout=10).status_code == 200, (kind, path)
    for kind, (path, port) in probes(container(rendered("gpu"), TRITON)).items():
        assert httpx.get(f"http://{cluster.triton.http_url}{path}", timeout=10).status_code == 200, (kind, path)


def poll(check, attempts: int = 600, pause_s: float = 0.1) -> bool:
    """Whether `check()` became true within `attempts` tries: bounded by tries, asserted on the outcome."""
    for _ in range(attempts):
        if check():
            return True
        time.sleep(pause_s)
    return False


def test_triton_down_makes_instances_unready_but_not_dead(cluster, reference):
    """The manifests' liveness path stays 200 while Triton is down (no restart of every replica) and their
    readiness path does not; nginx passes the service's 503 on; all of it recovers without a restart."""
    paths = service_probes()
    live, ready = paths["livenessProbe"], paths["readinessProbe"]
    cluster.triton.kill()
    try:
        for instance in cluster.instances:
            assert poll(lambda: httpx.get(instance.url + ready, timeout=10).status_code == 503)
            assert httpx.get(instance.url + live, timeout=10).status_code == 200
        with httpx.Client(base_url=cluster.url, headers=AUTH, timeout=30) as client:
            refused = analyze(client, good_jpeg())
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert refused.json()["error"] in ("backend_unavailable", "unavailable")  # the service's, or nginx's
    finally:
        cluster.triton.start()
    for instance in cluster.instances:
        assert poll(lambda: httpx.get(instance.url + ready, timeout=10).status_code == 200)
    with httpx.Client(base_url=cluster.url, headers=AUTH, timeout=30) as client:
        assert poll(lambda: analyze(client, good_jpeg()).status_code == 200)
        assert same_faces(analyze(client, good_jpeg()).json(), reference)


def test_command_line_cluster_stops_everything_on_sigterm(repository, tmp_path):
    """`python -m faceserve.cluster --embedded`: ready line, answers through nginx, nothing left after SIGTERM."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "faceserve.cluster", "--embedded", "--instances", "2",
                                "--port", str(port), "--log-dir", str(tmp_path)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output = []
        for line in process.stdout:
            output.append(line)
            if line.startswith("Ctrl-C to stop."):
                break
        assert process.poll() is None, "".join(output)
        tree = devserver.process_tree(process.pid)
        # the CLI, two bentoml arbiters with a worker each, nginx's master and worker
        assert len(tree) >= 7, "".join(output)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        response = httpx.post(f"http://127.0.0.1:{port}/analyze", files={"image": ("a.jpg", good_jpeg(), "image/jpeg")},
                              timeout=30)
        assert response.status_code == 200 and len(response.json()["faces"]) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        assert "cluster stopped" in process.stdout.read()
        assert [pid for pid in tree if devserver.alive(pid)] == []
    finally:
        if process.poll() is None:
            for pid in devserver.process_tree(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.wait()
