"""The local multi-instance deployment (faceserve.dev.cluster): real nginx in front of two real `bentoml serve`
instances on one real local Triton and one real local PostgreSQL holding the gallery. One cluster for the
module; the kill test restarts an instance and the store test restarts PostgreSQL, so the tests after them
see both back.

Which instance answered a request is read from nginx's access log, by the X-Request-Id nginx returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

import httpx
import numpy as np
import pytest

from faceserve.dev import devserver, photos
from faceserve.dev.cluster import Cluster
from faceserve.jobs import JobLimits
from tests.hostile_corpus import good_jpeg
from tests.integration.test_identity_http import (IDENTITY, PROBES, enrol, enrol_photos, every_identity, identify,
                                                  named_left_to_right)
from tests.manifests import OVERLAYS, SERVICE, TRITON, container, probes, rendered
from tests.support import LOG_DIR, ROOT, free_port, jpeg

pytestmark = pytest.mark.triton

INSTANCES = 2
BODY_LIMIT = 3_000_000  # FACESERVE_MAX_BODY_BYTES of every instance; nginx must take it over
JOB_LIMITS = JobLimits(max_images=100, max_bytes=4_000_000)  # and for /jobs/submit, from the job limits
JOB_BODY_LIMIT = JOB_LIMITS.max_request_bytes
API_KEY = "cluster-test-key"
AUTH = {"X-API-Key": API_KEY}
CONCURRENCY = 16
# A load scenario waits for counts of answers, never for time; past this many requests it has failed.
MAX_LOAD_REQUESTS = 5000
PROBE = IDENTITY / "probe" / "obama1.jpg"  # the load's identify photo: one face, obama's


@pytest.fixture(scope="module")
def cluster(repository):
    env = {"FACESERVE_MAX_BODY_BYTES": str(BODY_LIMIT), "FACESERVE_API_KEYS": API_KEY,
           "FACESERVE_JOB_MAX_IMAGES": str(JOB_LIMITS.max_images), "FACESERVE_JOB_MAX_BYTES": str(JOB_LIMITS.max_bytes)}
    with Cluster(INSTANCES, backend="triton", env=env, log_dir=LOG_DIR / f"faceserve-cluster-{os.getpid()}") as cluster:
        yield cluster


def access_log(cluster: Cluster, awaited=(), timeout_s: float = 30.0) -> dict[str, dict]:
    """nginx's access log by request id, once it holds every id in `awaited`: nginx writes a request's line
    when it is done with the connection, which may be just after the client has read the answer."""
    awaited, deadline = {i for i in awaited if i}, time.monotonic() + timeout_s
    while True:
        lines = cluster.nginx.access_log.read_text().splitlines()
        log = {entry["request_id"]: entry for entry in map(json.loads, lines)}
        if awaited <= log.keys() or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def request_ids(*answers) -> list[str]:
    return [answer.headers["x-request-id"] for answer in answers]


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
    log = access_log(cluster, request_ids(*responses))
    served_by = [upstreams(log[r.headers["x-request-id"]]) for r in responses]
    assert all(len(tried) == 1 for tried in served_by)  # nobody failed over
    assert {tried[0] for tried in served_by} == {i.address for i in cluster.instances}


def test_health_through_nginx_needs_no_key_and_the_rest_does(cluster):
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        refused = analyze(client, good_jpeg())
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"


def identified_people(client: httpx.Client) -> dict[str, list]:
    """Every probe photo's names, as test_identity_http's PROBES lists them (others in the photo: nobody)."""
    found = {}
    for probe, expected in PROBES.items():
        named, others = named_left_to_right(identify(client, IDENTITY / "probe" / probe)["faces"], len(expected))
        found[probe] = named + [name for name in others if name is not None]
    return found


@pytest.fixture(scope="module")
def enrolled(cluster, fixtures) -> dict[str, str]:
    """The fixture people, enrolled alternately through each instance directly: {name: identity id}."""
    if not (IDENTITY / "enroll").is_dir():
        pytest.skip(f"{IDENTITY} is absent: the identity photos are needed")
    ids = {}
    instances = itertools.cycle(cluster.instances)
    for person, photo_paths in enrol_photos().items():
        with httpx.Client(base_url=next(instances).url, headers=AUTH) as client:
            identity, added = enrol(client, person, photo_paths)
        assert [face["identity_id"] for face in added["faces"]] == [identity["id"]] * len(photo_paths)
        ids[person] = identity["id"]
    return ids


def test_enrolments_through_one_instance_are_identified_through_another(cluster, enrolled):
    """Each instance identifies the people the other enrolled, and so does nginx, whichever answers."""
    assert sorted(enrolled) == ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
    for url in [i.url for i in cluster.instances] + [cluster.url]:
        with httpx.Client(base_url=url, headers=AUTH) as client:
            assert identified_people(client) == PROBES, url
            listed = {i["id"]: (i["name"], i["face_count"]) for i in every_identity(client)}
        assert listed == {enrolled[name]: (name, len(paths)) for name, paths in enrol_photos().items()}


@dataclasses.dataclass
class Outcome:
    kind: str  # "analyze", "identify", "create" or "add_faces"
    phase: str  # what the scenario had done when the request was sent
    answered_in: str  # ... and when its answer came
    request_id: str | None
    status: int  # 0: no HTTP answer at all
    body: dict | None
    retry_after: str | None


Step = Callable[["Load"], Awaitable[None]]


class Load:
    """CONCURRENCY clients through nginx, each taking the steps of `mix` in turn (client i from step i) while
    the scenario runs; every request's outcome is tagged with the phase the scenario had reached when it was
    sent. Waits are bounded by requests (MAX_LOAD_REQUESTS), not by time."""

    def __init__(self, cluster: Cluster, mix: list[Step]):
        self.cluster, self.mix = cluster, mix
        self.phase = "before"
        self.outcomes: list[Outcome] = []
        self.client: httpx.AsyncClient | None = None

    async def post(self, kind: str, route: str, **request) -> Outcome:
        sent_in = self.phase
        try:
            response = await self.client.post(route, **request)
        except httpx.HTTPError:
            outcome = Outcome(kind, sent_in, self.phase, None, 0, None, None)
        else:
            outcome = Outcome(kind, sent_in, self.phase, response.headers.get("x-request-id"), response.status_code,
                              response.json(), response.headers.get("retry-after"))
        self.outcomes.append(outcome)
        return outcome

    def count(self, *, phase: str | None = None, kind: str | None = None, status: int | None = None) -> int:
        return sum(1 for o in self.outcomes
                   if phase in (None, o.phase) and kind in (None, o.kind) and status in (None, o.status))

    async def until(self, enough: Callable[[], bool], what: str) -> None:
        while not enough():
            assert len(self.outcomes) < MAX_LOAD_REQUESTS, f"no {what} after {len(self.outcomes)} requests"
            await asyncio.sleep(0.05)

    async def meanwhile(self, action: Callable[[], None], during: str, after: str) -> None:
        """`action()` in a thread while the load goes on: requests sent meanwhile are tagged `during`."""
        self.phase = during
        await asyncio.get_running_loop().run_in_executor(None, action)
        self.phase = after

    @contextlib.asynccontextmanager
    async def running(self):
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=self.cluster.url, headers=AUTH, timeout=60, limits=limits) as client:
            self.client = client

            async def user(first: int) -> None:
                for step in itertools.islice(itertools.cycle(self.mix), first, None):
                    if stop.is_set():
                        return
                    await step(self)

            users = [asyncio.create_task(user(i)) for i in range(CONCURRENCY)]
            try:
                yield self
            finally:
                stop.set()
                await asyncio.gather(*users)

    def summary(self) -> str:
        phases = dict.fromkeys(o.phase for o in self.outcomes)
        kinds = dict.fromkeys(o.kind for o in self.outcomes)
        failed = sorted((o.phase, o.kind, o.status, o.body and o.body.get("error")) for o in self.outcomes
                        if o.status != 200)
        return (f"{len(self.outcomes)} requests; by phase and kind: "
                f"{ {p: {k: self.count(phase=p, kind=k) for k in kinds} for p in phases} }; "
                f"{len(failed)} failed: {failed}")


def analyze_step(image: bytes) -> Step:
    async def step(load: Load) -> None:
        await load.post("analyze", "/analyze", files={"image": ("a.jpg", image, "image/jpeg")})
    return step


def identify_step(photo: Path) -> Step:
    image = photo.read_bytes()

    async def step(load: Load) -> None:
        await load.post("identify", "/identify", files={"image": (photo.name, image, "image/jpeg")})
    return step


LOAD_ENROLMENT = "astronaut"  # the face good_jpeg() shows; nobody else enrolled looks like her


def enrol_step(image: bytes) -> Step:
    """An enrolment as a client makes it: create the identity, then add its face."""
    async def step(load: Load) -> None:
        created = await load.post("create", "/identities/create", json={"name": LOAD_ENROLMENT, "metadata": {}})
        if created.status == 200:
            await load.post("add_faces", "/identities/add_faces", data={"identity_id": created.body["id"]},
                            files=[("images", ("a.jpg", image, "image/jpeg"))])
    return step



def answered_right(outcome: Outcome, reference: dict, person_id: str) -> bool:
    """An analysis the same as the reference; an identification naming the person in PROBE and nobody else."""
    if outcome.kind == "analyze":
        return same_faces(outcome.body, reference)
    return [face["identity"] and face["identity"]["id"] for face in outcome.body["faces"]] == [person_id]


def served_by(log: dict[str, dict], outcome: Outcome) -> list[str]:
    return upstreams(log[outcome.request_id]) if outcome.request_id in log else []


def large_photo() -> bytes:
    """A 2048x2048 photo of one face: decoding it keeps each request on its instance long enough that some
    are in flight on the victim when it dies (with the small photo the client's own work dominates)."""
    from PIL import Image
    return jpeg(np.asarray(Image.fromarray(photos.astronaut()).resize((2048, 2048))))


async def kill_and_restart(load: Load, victim) -> None:
    def victim_answered_each_kind(count: int) -> bool:
        """Requests sent after the restart that the victim answered, of each kind in the load."""
        log = access_log(load.cluster)
        served = [o for o in load.outcomes if o.phase == "restarted" and o.status == 200
                  and served_by(log, o)[-1:] == [victim.address]]
        return all(sum(1 for o in served if o.kind == kind) >= count for kind in ("analyze", "identify"))

    readiness = load.cluster.readiness
    async with load.running():
        await load.until(lambda: load.count() >= 60, "60 answers")
        await load.meanwhile(victim.kill, "killing", "killed")
        await load.until(lambda: readiness.unready == {victim.address}, "nginx told to leave the dead victim out")
        await load.until(lambda: load.count(phase="killed") >= 60, "60 answers while the victim was dead")
        await load.meanwhile(victim.start, "restarting", "restarted")  # the load goes on while it starts
        await load.until(lambda: not readiness.unready, "nginx told to route to the ready victim again")
        await load.until(lambda: victim_answered_each_kind(5), "answers of the restarted victim")


def test_kill_9_of_one_instance_under_mixed_load(cluster, enrolled):
    """Analyze (a large photo) and identify (obama1.jpg) through nginx while one instance is `kill -9`ed and
    restarted: only requests in flight on it fail, and every answer given is right."""
    victim, survivor = cluster.instances
    image = large_photo()
    with httpx.Client(base_url=victim.url, headers=AUTH, timeout=30) as client:
        reference = analyze(client, image).json()
    assert len(reference["faces"]) == 1 and reference["faces"][0]["emotion"]["label"] == "happy"
    load = Load(cluster, [analyze_step(image), identify_step(PROBE)])
    asyncio.run(kill_and_restart(load, victim))
    log = access_log(cluster, [o.request_id for o in load.outcomes])
    failed = [o for o in load.outcomes if o.status != 200]
    print(f"\nkill -9: {load.summary()}")

    assert all(o.status != 0 for o in load.outcomes), "every request got an HTTP answer from nginx"
    assert all(answered_right(o, reference, enrolled["obama"]) for o in load.outcomes if o.status == 200)
    # Only requests in flight on the victim when it died failed: sent before it was dead, to the victim,
    # answered by nginx with 503 (its 502) in the service's error shape and with Retry-After.
    for outcome in failed:
        entry = log.get(outcome.request_id, {})
        assert outcome.phase in ("before", "killing"), \
            f"{outcome.kind} sent {outcome.phase}: {outcome.status} after {entry.get('upstream')} answered " \
            f"{entry.get('upstream_status')} (victim {victim.address}, survivor {survivor.address}); nginx's error " \
            f"log ends: {cluster.nginx.error_log.read_text().splitlines()[-8:]}"
        assert outcome.status in (502, 503) and outcome.body["error"] == "unavailable", outcome
        assert outcome.retry_after, outcome
        assert served_by(log, outcome) == [victim.address], log[outcome.request_id]
    assert 1 <= len(failed) <= CONCURRENCY  # at most one per client, each in flight on the victim
    # Once it was dead (and before its restart began), requests nginx sent the victim were passed on: refused
    # connections are safe to retry.
    moved = [o for o in load.outcomes
             if (o.phase, o.answered_in) == ("killed", "killed") and served_by(log, o)[:1] == [victim.address]]
    passed_on = [log[o.request_id] for o in moved if served_by(log, o) != [victim.address, survivor.address]]
    assert not passed_on, passed_on
    # Back after its restart, identifying from the shared store (asserted in kill_and_restart's last wait).


async def stop_and_start_postgres(load: Load) -> None:
    """PostgreSQL restarted under load, held down until store requests have met the outage: a bare restart
    is over in a fraction of a second, before any request may need the store."""
    postgres = load.cluster.postgres
    async with load.running():
        await load.until(lambda: load.count(kind="add_faces", status=200) >= 4, "4 enrolments before the outage")
        await load.meanwhile(postgres.stop, "stopping", "down")
        await load.until(lambda: load.count(phase="down", kind="create") >= 8, "8 enrolments during the outage")
        await load.meanwhile(postgres.start, "starting", "restarted")
        await load.until(lambda: load.count(phase="restarted", kind="add_faces", status=200) >= 8,
                         "8 enrolments after the restart")


def test_postgres_restart_under_load(cluster, enrolled, reference, tmp_path):
    """Analyze, identify and enrolments through nginx while the shared PostgreSQL stops and starts again:
    enrolments get 503 `store_unavailable` with Retry-After while it is down and succeed again once it is
    back, with no instance restarted; analyze and identify (each instance's index in memory) never fail;
    nothing committed is lost."""
    enrolled_face = tmp_path / "astronaut.jpg"
    enrolled_face.write_bytes(good_jpeg())
    load = Load(cluster, [analyze_step(good_jpeg()), identify_step(PROBE), enrol_step(enrolled_face.read_bytes())])
    server_pids = [i.server.pid for i in cluster.instances]
    asyncio.run(stop_and_start_postgres(load))
    print(f"\nPostgreSQL restart: {load.summary()}")

    assert all(o.status != 0 for o in load.outcomes), "every request got an HTTP answer from nginx"
    answers = [o for o in load.outcomes if o.kind in ("analyze", "identify")]
    assert all(o.status == 200 and answered_right(o, reference, enrolled["obama"]) for o in answers)
    writes = [o for o in load.outcomes if o.kind in ("create", "add_faces")]
    refused = [o for o in writes if o.status != 200]
    for outcome in refused:
        assert (outcome.status, outcome.body["error"]) == (503, "store_unavailable"), outcome
        assert outcome.retry_after == "1", outcome
        # sent while the store was down or going down, or before that and still in flight when it went
        assert outcome.phase != "restarted", outcome
    assert any(o.phase == "down" for o in refused)
    assert [i.server.pid for i in cluster.instances] == server_pids  # recovered without a restart

    # Nothing committed is lost: every identity and face confirmed is in the store and every instance's index.
    created = {o.body["id"] for o in writes if o.kind == "create" and o.status == 200}
    committed = {o.body["identity_id"] for o in writes if o.kind == "add_faces" and o.status == 200}
    assert len(committed) <= 100, "more enrolments than identify's top_k can list"
    for instance in cluster.instances:
        with httpx.Client(base_url=instance.url, headers=AUTH) as client:
            listed = {i["id"]: i["face_count"] for i in every_identity(client) if i["name"] == LOAD_ENROLMENT}
            (face,) = identify(client, enrolled_face, top_k="100")["faces"]
            assert identified_people(client) == PROBES, instance.name  # enrolled before the restart
        assert listed.keys() == created
        assert all(listed[i] == 1 for i in committed)
        assert all(listed[i] in (0, 1) for i in created - committed)  # refused: absent, or whole if committed
        assert committed <= {match["id"] for match in face["matches"]}



def json_body_of_size(size: int) -> bytes:
    """A JSON analyze request of exactly `size` bytes (its image is not one: the service answers 400)."""
    frame = b'{"image_base64": "%s"}'
    return frame.replace(b"%s", b"A" * (size - len(frame) + 2))


@pytest.mark.parametrize("route, limit", [("/analyze", BODY_LIMIT), ("/jobs/submit", JOB_BODY_LIMIT)])
def test_body_limit_is_the_services_and_nginx_applies_it(cluster, route, limit):
    """The same limit on both sides, per route: a job's uploads are bounded by the job limits, not by one
    image's."""
    settings = cluster.instance_settings()
    assert settings.route_body_bytes.get(route, settings.limits.max_body_bytes) == limit
    headers = {**AUTH, "content-type": "application/json"}
    over, at_limit = json_body_of_size(limit + 1), json_body_of_size(limit)
    assert (len(over), len(at_limit)) == (limit + 1, limit)
    with httpx.Client(headers=headers, timeout=30) as client:
        refused = client.post(f"{cluster.url}{route}", content=over)
        passed = client.post(f"{cluster.url}{route}", content=at_limit)
        by_instance = client.post(f"{cluster.instances[0].url}{route}", content=over)
    log = access_log(cluster, request_ids(refused, passed))
    assert refused.status_code == 413 and refused.json()["error"] == "body_too_large"
    assert str(limit) in refused.json()["message"]
    assert upstreams(log[refused.headers["x-request-id"]]) == []  # nginx answered; no instance was busy
    # One byte less reaches an instance, which finds no image in it: the same limit on both sides.
    assert passed.status_code == 400 and passed.json()["error"] != "body_too_large", passed.json()
    assert upstreams(log[passed.headers["x-request-id"]])
    assert by_instance.status_code == 413 and by_instance.json()["error"] == "body_too_large"


def test_logs_hold_no_keys(cluster):
    secret_in_query = "query-secret-0451"
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        response = client.post(f"/analyze?api_key={secret_in_query}", headers={"Authorization": f"Bearer {API_KEY}"},
                               files={"image": ("a.jpg", good_jpeg(), "image/jpeg")})
    assert response.status_code == 200
    entry = access_log(cluster, request_ids(response))[response.headers["x-request-id"]]
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
        # None ready: the readiness watch leaves every instance in nginx, so the service's own 503 says why.
        watch = cluster.readiness
        assert poll(lambda: min(watch.failures.values()) >= watch.failures_to_remove and not watch.unready)
        with httpx.Client(base_url=cluster.url, headers=AUTH, timeout=30) as client:
            refused = analyze(client, good_jpeg())
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert refused.json()["error"] == "backend_unavailable", refused.json()
    finally:
        cluster.triton.start()
    for instance in cluster.instances:
        assert poll(lambda: httpx.get(instance.url + ready, timeout=10).status_code == 200)
    with httpx.Client(base_url=cluster.url, headers=AUTH, timeout=30) as client:
        assert poll(lambda: analyze(client, good_jpeg()).status_code == 200)
        assert same_faces(analyze(client, good_jpeg()).json(), reference)


def test_command_line_cluster_stops_everything_on_sigterm(repository, tmp_path):
    """`python -m faceserve.dev.cluster --embedded`: ready line, answers through nginx, nothing left after SIGTERM."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "faceserve.dev.cluster", "--embedded", "--instances", "2",
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
        # the CLI, two bentoml arbiters with a worker each, nginx's master and worker, the postmaster and its
        # background processes
        assert len(tree) >= 9, "".join(output)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        upload = {"image": ("a.jpg", good_jpeg(), "image/jpeg")}
        refused = httpx.post(f"http://127.0.0.1:{port}/analyze", files=upload, timeout=30)
        assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized")  # nginx makes clients local
        admin_key = (tmp_path / "admin-key").read_text().strip()
        assert admin_key not in "".join(output) and oct((tmp_path / "admin-key").stat().st_mode & 0o777) == "0o600"
        response = httpx.post(f"http://127.0.0.1:{port}/analyze", files=upload, headers={"X-API-Key": admin_key},
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
