"""`make image`'s image, built and run here with podman as an operator would (docs/deploy.md, "The image").

One session build (bentos/image/build.sh, or FACESERVE_TEST_IMAGE), one container on a named volume: its answers
equal a `bentoml serve` of the same checkout, an identity enrolled survives `kill -9` of the container, API keys
given through the environment hold, and a bad configuration stops the container at once with one sentence.
Every container, volume and image made here is removed in `finally`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from faceserve.dev import photos
from tests import containers
from tests.containers import podman
from tests.support import LOG_DIR, free_port, jpeg, serve

pytestmark = pytest.mark.skipif(containers.unavailable() is not None, reason=str(containers.unavailable()))

KEY = "container-test-key"
HEADERS = {"X-API-Key": KEY}
BOX_TOLERANCE = 1e-3
CONTAINER_UID = 1034  # the `bentoml` user of every bento image
# Written to $FACESERVE_TEST_LOG_DIR/faceserve-image.json: build time, size, start times, RSS (docs/deploy.md)
figures: dict[str, float | int | None] = {}


@pytest.fixture(scope="module")
def image(built_image):
    name, figures["build_s"] = built_image
    figures["size_bytes"] = int(podman("image", "inspect", name, "--format", "{{.Size}}").stdout)
    yield name
    report = LOG_DIR / "faceserve-image.json"
    report.write_text(json.dumps(figures, indent=1))
    print(f"\nimage figures ({report}): {figures}")



@pytest.fixture(scope="module")
def photos_to_compare(fixtures) -> dict[str, bytes]:
    """Real photos: one face, four faces, a group, and photos with no face."""
    return {"astronaut": jpeg(photos.astronaut()), "grace_hopper": jpeg(photos.grace_hopper()),
            "emotion_classification": (photos.FIXTURE_IMAGES / "emotion_classification.jpg").read_bytes(),
            "solvay_conference": (photos.FIXTURE_IMAGES / "solvay_conference.jpg").read_bytes(),
            **{name: jpeg(pixels) for name, pixels in photos.no_face_photos().items()}}


def analyze_all(url: str, images: dict[str, bytes], headers: dict[str, str] | None = None) -> dict[str, dict]:
    answers = {}
    for name, data in images.items():
        response = httpx.post(f"{url}/analyze", files={"image": (f"{name}.jpg", data, "image/jpeg")},
                              headers=headers, timeout=120)
        assert response.status_code == 200, f"{name}: {response.status_code} {response.text}"
        answers[name] = response.json()
    return answers


@pytest.fixture(scope="module")
def served_answers(repository, photos_to_compare) -> dict[str, dict]:
    """`make serve`'s answers (a `bentoml serve` of this checkout), taken before any container runs."""
    with serve() as url:
        return analyze_all(url, photos_to_compare)


@dataclasses.dataclass
class Deployment:
    image: str
    volume: str
    port: int
    names: list[str] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def container(self) -> str:
        return self.names[-1]

    def run(self) -> float:
        """A new container on the volume; the seconds until its /readyz answered 200."""
        self.names.append(containers.unique())
        podman("run", "-d", "--name", self.container, "--read-only", "--network", "host",
               "-v", f"{self.volume}:/data", "-e", f"BENTOML_PORT={self.port}", "-e", f"FACESERVE_API_KEYS={KEY}",
               self.image)
        return containers.wait_ready(self.url, self.container)


@pytest.fixture(scope="module")
def deployment(image, served_answers):
    deployment = Deployment(image, containers.unique(), free_port())
    podman("volume", "create", deployment.volume)
    try:
        figures["cold_start_to_readyz_s"] = round(deployment.run(), 2)
        yield deployment
    finally:
        for name in deployment.names:
            podman("rm", "-f", "-t", "0", name, check=False)
        podman("volume", "rm", "-f", deployment.volume, check=False)


def test_the_image_is_what_production_wants(image, deployment, repository):
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == "bentoml"
    assert env["BENTOML_DO_NOT_TRACK"] == "True" and env["FACESERVE_DATA_DIR"] == "/data"
    assert env["FACESERVE_BACKEND"] == "onnxruntime"
    assert "/readyz" in " ".join(inspected["Healthcheck"]["Test"])
    # podman schedules health checks through systemd timers, absent here: the check itself is run by hand
    assert podman("healthcheck", "run", deployment.container, check=False).returncode == 0
    assert podman("exec", deployment.container, "id", "-u").stdout.strip() == str(CONTAINER_UID)
    refused = podman("exec", deployment.container, "touch", "/home/bentoml/bento/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    python = ["exec", deployment.container, "/app/.venv/bin/python", "-c"]
    found = podman(*python, "import importlib.util as u; print([m for m in ('tensorflow', 'keras', 'tf2onnx') "
                            "if u.find_spec(m)])").stdout.strip()
    assert found == "[]"
    packed = podman("exec", deployment.container, "sh", "-c", "cd /home/bentoml/bento/src/model_repository && "
                    "ls */1/model.onnx").stdout.split()
    assert sorted(packed) == sorted(str(m.relative_to(repository)) for m in repository.glob("*/1/model.onnx"))
    figures["rss_bytes_after_start"] = containers.rss_bytes(deployment.container)


def test_answers_equal_make_serve(deployment, photos_to_compare, served_answers):
    answers = analyze_all(deployment.url, photos_to_compare, HEADERS)
    figures["rss_bytes_after_analyze"] = containers.rss_bytes(deployment.container)
    for name, expected in served_answers.items():
        got = answers[name]
        assert (got["width"], got["height"], got["detector"]) == (expected["width"], expected["height"],
                                                                 expected["detector"]), name
        assert got["models"] == expected["models"] and got["missing_heads"] == expected["missing_heads"], name
        assert len(got["faces"]) == len(expected["faces"]), name
        for face, reference in zip(got["faces"], expected["faces"]):
            corners = ("x1", "y1", "x2", "y2")
            assert np.allclose([face["box"][k] for k in corners], [reference["box"][k] for k in corners],
                               atol=BOX_TOLERANCE, rtol=0), name
            for head in ("emotion", "gender"):
                assert (face[head] or {}).get("label") == (reference[head] or {}).get("label"), (name, head)
            assert face["age"] == (None if reference["age"] is None else pytest.approx(reference["age"], abs=1e-3))
    assert sum(len(a["faces"]) for a in answers.values()) > 10  # real faces were compared, not empty lists
    assert all(answers[name]["faces"] == [] for name in ("chelsea", "coffee", "rocket"))


def test_api_keys_from_the_environment_hold(deployment):
    refused = httpx.post(f"{deployment.url}/models", timeout=30)
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    wrong = httpx.post(f"{deployment.url}/models", headers={"X-API-Key": "not-the-key"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    models = httpx.post(f"{deployment.url}/models", headers=HEADERS, timeout=30)
    assert models.status_code == 200 and models.json()


def test_the_host_allowlist_from_the_environment_holds(image):
    port, name = free_port(), containers.unique()
    volume = containers.unique()
    podman("volume", "create", volume)
    try:
        podman("run", "-d", "--name", name, "--read-only", "--network", "host", "-v", f"{volume}:/data",
               "-e", f"BENTOML_PORT={port}", "-e", f"FACESERVE_API_KEYS={KEY}",
               "-e", f"FACESERVE_ALLOWED_HOSTS=faceserve.example,127.0.0.1:{port}", image)
        containers.wait_ready(f"http://127.0.0.1:{port}", name)
        refused = httpx.post(f"http://127.0.0.1:{port}/models", headers={**HEADERS, "Host": "evil.example"}, timeout=30)
        assert refused.status_code == 403 and refused.json()["error"] == "host_not_allowed"
        allowed = httpx.post(f"http://127.0.0.1:{port}/models", headers={**HEADERS, "Host": "faceserve.example"},
                             timeout=30)
        assert allowed.status_code == 200
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)


def test_an_enrolled_identity_survives_kill_9_of_the_container(deployment, fixtures):
    people = fixtures / "identity"
    client = httpx.Client(base_url=deployment.url, headers=HEADERS, timeout=120)
    created = client.post("/identities/create", json={"name": "obama", "metadata": {"source": "container test"}})
    assert created.status_code == 200, created.text
    identity = created.json()["id"]
    added = client.post("/identities/add_faces", data={"identity_id": identity},
                        files=[("images", (p.name, p.read_bytes(), "image/jpeg"))
                               for p in sorted((people / "enroll" / "obama").iterdir())])
    assert added.status_code == 200, added.text

    podman("kill", "-s", "KILL", deployment.container)
    # `podman wait` returns once the container is down (its state passes through "stopped" to "exited" while
    # podman cleans up): the exit status is the kill's.
    assert podman("wait", deployment.container).stdout.strip() == "137"
    podman("rm", deployment.container)
    figures["restart_to_readyz_s"] = round(deployment.run(), 2)

    listed = client.post("/identities", json={}).json()
    assert [(i["id"], i["name"]) for i in listed["identities"]] == [(identity, "obama")]
    probe = people / "probe" / "obama1.jpg"
    answer = client.post("/identify", files={"image": (probe.name, probe.read_bytes(), "image/jpeg")})
    assert answer.status_code == 200, answer.text
    assert [face["identity"]["id"] for face in answer.json()["faces"] if face["identity"]] == [identity]


@pytest.mark.parametrize("case", ["no volume", "unwritable store", "missing key file"])
def test_a_bad_configuration_stops_the_container_with_one_sentence(image, tmp_path, case):
    name = containers.unique()
    options = ["-e", f"FACESERVE_API_KEYS={KEY}"]
    expected = {"no volume": "is not on a mounted volume",
                "unwritable store": f"is not writable by uid {CONTAINER_UID}",
                "missing key file": "the configuration cannot be read"}[case]
    if case != "no volume":
        store = tmp_path / "data"
        store.mkdir(mode=0o755)  # root's: the container's user cannot write there
        options += ["-v", f"{store}:/data"]
    if case == "missing key file":
        store.chmod(0o777)
        options += ["-e", "FACESERVE_API_KEYS_FILE=/etc/faceserve/secrets/api-keys"]
    try:
        done = podman("run", "--name", name, "--read-only", "--network", "host", "-e", f"BENTOML_PORT={free_port()}",
                      *options, image, check=False)
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        said = [line for line in done.stderr.splitlines() if not line.startswith('time="')]  # podman's own log
        assert len(said) == 1 and said[0].startswith("faceserve: not started: ") and expected in said[0], said
        assert done.stdout == ""  # BentoML never started
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
