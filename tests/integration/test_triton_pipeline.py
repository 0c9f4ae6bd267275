"""The pipeline and rotate models inside the real local Triton (faceserve.triton_models), over gRPC and HTTP.

One `tritonserver` for the module, serving the ONNX models and faceserve's Python models; the pipeline's and
rotate's answers are compared with those of the real service (`bentoml serve`, embedded backend), also one for
the module.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from faceserve.backends import create
from faceserve.dev import photos
from faceserve.dev.triton_local import LocalTriton
from faceserve.models.repository import Repository, read_config
from faceserve.pipeline import imaging
from faceserve.pipeline.pipeline import Pipeline
from faceserve.triton_models import configs
from faceserve.triton_models.client import PipelineClient
from tests import hostile_corpus
from tests.integration.test_triton import model_stats, real_photos
from tests.support import FIXTURES
from tests.support import ROOT, free_port, jpeg, serve

# the serving embedding model's (embedding_dlib) descriptor
DIMENSION = 128

pytestmark = pytest.mark.triton

PROTOCOLS = ("grpc", "http")
# The service's own fields, not the analysis': `request_id` names the answer its store remembered for `/feedback`
# (the pipeline model keeps no store, so null), `timings_ms` is measured per call.
IGNORED = {"request_id", "timings_ms"}
PIXELS = 1e-3  # boxes, landmarks and pose are in pixels and degrees (rounded to 2 places by the pipeline)
# A face's quality is rounded by the pipeline (faceserve/pipeline/quality.py): its values may differ by one step
QUALITY_STEPS = {"width": 0.1, "height": 0.1, "size": 0.1, "sharpness": 0.1, "turn": 0.01, "presence": 1e-4}


@pytest.fixture(scope="module")
def triton(repository, gender_age_built):
    with LocalTriton(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                     python_models=True) as server:
        yield server


@pytest.fixture(scope="module")
def clients(triton) -> dict[str, PipelineClient]:
    made = {"grpc": PipelineClient(f"grpc://{triton.grpc_url}"), "http": PipelineClient(f"http://{triton.http_url}")}
    yield made
    for client in made.values():
        client.close()


@pytest.fixture(scope="module")
def service(repository, gender_age_built) -> httpx.Client:
    """The real service on the embedded backend (onnxruntime in its own process)."""
    with serve() as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def service_post(service: httpx.Client, endpoint: str, data: bytes, **form) -> httpx.Response:
    response = service.post(f"/{endpoint}", data=form, files={"image": ("photo.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response


def assert_same(got, want, path: str = "analysis") -> None:
    """Same keys, strings and counts; numbers within 1e-5 (coordinates within PIXELS)."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for key in set(want) - IGNORED:
            assert_same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for index, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{path}[{index}]")
    elif isinstance(want, float) or isinstance(got, float):
        if ".quality." in path:
            tolerance = QUALITY_STEPS[path.rsplit(".", 1)[1]] * 1.001
        else:
            tolerance = PIXELS if any(k in path for k in ("box", "landmarks", "pose")) else 1e-5
        assert got == pytest.approx(want, abs=tolerance), path
    else:
        assert got == want, path


def triton_error(call) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.message()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ---- the models' configs -------------------------------------------------------------------------


def test_committed_configs_are_the_generated_ones(repository):
    """model_repository/{pipeline,rotate} hold what `python -m faceserve.triton_models write` writes."""
    built = Repository.load(repository)
    assert not {"pipeline", "rotate"} & set(built.missing)  # Python models are not "declared but not built"
    if built.missing and not FIXTURES.is_dir():
        pytest.skip(f"{', '.join(built.missing)} not built: their artifacts come from {FIXTURES}, which is absent, "
                    "and the committed configs describe the whole repository")
    for gpu, path in ((False, "config.pbtxt"), (True, "configs/gpu.pbtxt")):
        for name, config in configs.configs(built, gpu=gpu).items():
            assert read_config(repository / name / path) == config, f"{name}/{path}"


def test_server_serves_the_python_models(triton):
    client = httpclient.InferenceServerClient(triton.http_url)
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index["pipeline"] == index["rotate"] == "READY"
    outputs = {o["name"]: o["datatype"] for o in client.get_model_metadata("pipeline")["outputs"]}
    assert outputs == {"analysis": "BYTES", "request_id": "BYTES", "boxes": "FP32", "scores": "FP32",
                       "emotion_label": "BYTES", "emotion_score": "FP32", "gender_label": "BYTES",
                       "gender_score": "FP32", "age": "FP32", "embedding": "FP32", "identity_id": "BYTES",
                       "identity_name": "BYTES", "identity_similarity": "FP32"}
    shapes = {o["name"]: o["shape"] for o in client.get_model_metadata("pipeline")["outputs"]}
    assert shapes["embedding"] == [-1, -1, DIMENSION] and shapes["identity_name"] == [-1, -1]


# ---- the pipeline model answers as the service does ---------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pipeline_answers_like_the_service(clients, service, fixtures, protocol):
    for name, (image, faces) in real_photos(fixtures).items():
        data = jpeg(image)
        answer = clients[protocol].analyze(data)
        want = service_post(service, "analyze", data).json()
        assert len(answer.analysis["faces"]) == faces, name
        assert_same(answer.analysis, want, name)
    grid = clients[protocol].analyze(jpeg(photos.fixture("emotion_classification.jpg"))).analysis
    assert len({face["emotion"]["label"] for face in grid["faces"]}) >= 2  # the quadrants differ


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_tensors_agree_with_the_json(clients, protocol):
    answer = clients[protocol].analyze(jpeg(photos.fixture("emotion_classification.jpg")))
    faces, tensors = answer.analysis["faces"], answer.tensors
    assert len(faces) == 4 and tensors["boxes"].shape == (4, 4)
    np.testing.assert_allclose(tensors["boxes"], [[f["box"][k] for k in ("x1", "y1", "x2", "y2")] for f in faces],
                               atol=1e-3)
    np.testing.assert_allclose(tensors["scores"], [f["score"] for f in faces], atol=1e-6)
    for head in ("emotion", "gender"):
        assert [label.decode() for label in tensors[f"{head}_label"]] == [f[head]["label"] for f in faces]
        np.testing.assert_allclose(tensors[f"{head}_score"], [f[head]["score"] for f in faces], atol=1e-6)
    np.testing.assert_allclose(tensors["age"], [f["age"] for f in faces], atol=1e-4)


def test_pipeline_without_faces_has_empty_tensors(clients):
    answer = clients["grpc"].analyze(jpeg(photos.no_face_photos()["coffee"]), embed=True)
    assert answer.analysis["faces"] == []
    assert answer.tensors["boxes"].shape == (0, 4) and answer.tensors["emotion_label"].shape == (0,)
    assert answer.tensors["embedding"].shape == (0, DIMENSION) and answer.tensors["identity_name"].shape == (0,)


# The embedding tensor against the embedded backend's: the same ONNX model on the same crops, in another process
# and another onnxruntime (Triton's own build, its own batching): its float sums may be ordered differently.
EMBEDDING_ABS = 1e-4  # per component of a unit vector of 128 (components around 0.09)
EMBEDDING_COSINE = 0.99999


@pytest.fixture(scope="module")
def embedded_pipeline(repository):
    """The in-process pipeline on the embedded backend (onnxruntime), with no embedding cache."""
    loop = asyncio.new_event_loop()
    built = Repository.load(repository)
    pipeline = Pipeline(built, create("onnxruntime", built.path))
    loop.run_until_complete(pipeline.start())
    yield lambda image: loop.run_until_complete(pipeline.analyze_and_embed(image))
    loop.run_until_complete(pipeline.backend.close())
    loop.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_embedding_tensor_is_the_embedded_backends(clients, embedded_pipeline, protocol):
    """With `embed`, a unit vector per face (a client can search its own gallery with it): the embedded
    backend's vector for the same face of the same photo, within EMBEDDING_ABS per component; its rows are in
    the faces' order, and without `embed` there are none."""
    probes = FIXTURES / "identity" / "probe"
    if not probes.is_dir():
        pytest.skip(f"{probes} is absent")
    measured = []
    for name, faces in (("kit_with_rose.jpg", 2), ("obama1.jpg", 1), ("lin-manuel-miranda.png", 1)):
        data = (probes / name).read_bytes()
        answer = clients[protocol].analyze(data, embed=True)
        analysis, want = embedded_pipeline(imaging.decode(data))
        got = answer.tensors["embedding"]
        assert got.dtype == np.float32 and got.shape == (faces, DIMENSION) == want.shape, name
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, want, atol=EMBEDDING_ABS, err_msg=name)
        assert (got * want).sum(axis=1).min() >= EMBEDDING_COSINE, name
        measured.append((float(np.abs(got - want).max()), float((got * want).sum(axis=1).min())))
        np.testing.assert_allclose(answer.tensors["boxes"], [[f.box.x1, f.box.y1, f.box.x2, f.box.y2]
                                                             for f in analysis.faces], atol=PIXELS)
        assert answer.tensors["identity_name"].shape == (0,)  # `embed` searches nothing
    print(f"{protocol}: embedding vs the embedded backend's, largest |difference| "
          f"{max(d for d, _ in measured):.2e}, least cosine {min(c for _, c in measured):.7f}")
    plain = clients[protocol].analyze((probes / "obama1.jpg").read_bytes())
    assert plain.tensors["embedding"].shape == (0, DIMENSION) and len(plain.analysis["faces"]) == 1


def test_detector_input_picks_the_detector(clients):
    data = jpeg(photos.astronaut())
    answer = clients["grpc"].analyze(data, detector="haar")
    assert answer.analysis["detector"] == "haar" and len(answer.analysis["faces"]) == 1


def test_identify_finds_whom_the_service_enrolled(clients, service):
    """The pipeline model opens the service's store (FACESERVE_STORE: here both processes inherit the session's
    data directory): a person enrolled through the service is identified by the pipeline model, which answers
    as the service's `analyze` with `identify` does."""
    data = jpeg(photos.astronaut())
    created = service.post("/identities/create", json={"name": "Eileen Collins"}).raise_for_status().json()
    service.post("/identities/add_faces", data={"identity_id": created["id"]},
                 files={"images": ("astronaut.jpg", data, "image/jpeg")}).raise_for_status()
    want = service_post(service, "analyze", data, identify="true").json()
    assert want["faces"][0]["identity"]["name"] == "Eileen Collins"
    for protocol in PROTOCOLS:
        answer = clients[protocol].analyze(data, identify=True)
        assert_same(answer.analysis, want, protocol)
        # the same match as plain tensors, beside the vector it was searched with
        match = want["faces"][0]["identity"]
        assert [v.decode() for v in answer.tensors["identity_name"]] == ["Eileen Collins"]
        assert [v.decode() for v in answer.tensors["identity_id"]] == [match["id"]]
        assert answer.tensors["identity_similarity"] == pytest.approx([match["similarity"]], abs=1e-6)
        assert answer.tensors["embedding"].shape == (1, DIMENSION)
    assert clients["grpc"].analyze(data).analysis["faces"][0]["identity"] is None  # only when asked
    # nobody known: an empty id and name, a NaN similarity
    unknown = clients["grpc"].analyze(jpeg(photos.grace_hopper()), identify=True)
    assert [face["identity"] for face in unknown.analysis["faces"]] == [None]
    assert [v.decode() for v in unknown.tensors["identity_name"]] == [""] == [
        v.decode() for v in unknown.tensors["identity_id"]]
    assert np.isnan(unknown.tensors["identity_similarity"]).all()


def test_concurrent_pipeline_requests_share_head_batches(triton, clients):
    """32 pipeline requests at a time: Triton groups them into one `execute`, whose requests run concurrently,
    so their BLS calls meet in the heads' dynamic batchers."""
    data = jpeg(photos.astronaut())
    heads = ("emotion", "gender", "age")
    before = {m: model_stats(triton, m) for m in heads}
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: PipelineClient(f"grpc://{triton.grpc_url}").analyze(data), range(64)))
    assert all(len(a.analysis["faces"]) == 1 and a.analysis["faces"][0]["emotion"]["label"] == "happy"
               for a in answers)
    means = {}
    for model in heads:
        after = model_stats(triton, model)
        rows, executions = after["rows"] - before[model]["rows"], after["executions"] - before[model]["executions"]
        assert rows == 64, (model, rows)
        means[model] = rows / executions
    print("mean head batch under 32 concurrent pipeline requests:", {m: round(v, 2) for m, v in means.items()})
    assert all(mean > 1 for mean in means.values()), means


# ---- rotate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rotate_gives_the_service_pixels_and_round_trips(clients, service, protocol):
    photo = photos.astronaut()[:300, :200]
    data = jpeg(photo)
    turned = clients[protocol].rotate(data, 90)
    for degrees in (90, -180, 270):
        want = service_post(service, "rotate", data, degrees=str(degrees)).content
        assert np.array_equal(decoded(clients[protocol].rotate(data, degrees)), decoded(want)), degrees
    back = clients[protocol].rotate(turned, 270)
    assert np.array_equal(decoded(back), imaging.decode(data))
    assert decoded(clients[protocol].rotate(data, -180, "jpeg")).shape == (300, 200, 3)


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_inputs_are_triton_errors_with_our_messages(triton, clients, protocol):
    client = clients[protocol]
    assert triton_error(lambda: client.analyze(b"")).startswith("empty_image: the image is empty")
    assert triton_error(lambda: client.analyze(b"<html>")).startswith(
        "invalid_image: the data is not an image in a supported format")
    assert triton_error(lambda: client.analyze(hostile_corpus.pixel_bomb())).startswith(
        "image_too_large: the image is 30000x30000 pixels")
    assert triton_error(lambda: client.analyze(jpeg(photos.astronaut()), detector="nope")).startswith(
        "unknown_detector: unknown detector 'nope'")
    assert triton_error(lambda: client.rotate(jpeg(photos.astronaut()), 45)).startswith(
        "invalid_rotation: rotation must be a multiple of 90 degrees, got 45")
    assert httpclient.InferenceServerClient(triton.http_url).is_model_ready("pipeline")
    assert len(client.analyze(jpeg(photos.astronaut())).analysis["faces"]) == 1


def pipeline_code(case: hostile_corpus.Case, code: str) -> str:
    """The pipeline model's error code where the service's HTTP edge answers before any decoding."""
    if code == "body_too_large":  # no body limit of ours in Triton (its gRPC limit is 2 GiB): random bytes
        return "invalid_image"
    if code == "invalid_request":  # the service's request schema (detector) or content type (PDF)
        return "unknown_detector" if case.params else "invalid_image"
    return code


def test_hostile_corpus(repository, gender_age_built):
    """Every image of the hostile corpus sent to the pipeline model, with the hostile server's limits: an error
    naming the problem, or the expected answer; the model stays READY and answers the next good photo."""
    cases = [case for case in hostile_corpus.corpus()
             if case.how in ("upload", "base64") and isinstance(case.payload, bytes) and "analyze" in case.endpoints
             and set(case.params) <= {"detector"}]
    assert len(cases) > 30
    with LocalTriton(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                     python_models=True, env=hostile_corpus.SERVER_ENV) as server:
        client = PipelineClient(f"grpc://{server.grpc_url}")
        for case in cases:
            status, code = case.expected("analyze")
            call = lambda: client.analyze(case.payload, detector=case.params.get("detector"))  # noqa: E731
            if status == 200:
                faces = call().analysis["faces"]
                if code == "face":
                    assert len(faces) == 1 and faces[0]["emotion"]["label"] == "happy", case.name
                else:
                    assert faces == [], case.name
            else:
                message = triton_error(call)
                assert message.startswith(f"{pipeline_code(case, code)}: "), (case.name, message)
                assert len(message) > len(code) + 10, (case.name, message)
        assert httpclient.InferenceServerClient(server.http_url).is_model_ready("pipeline")
        assert client.analyze(hostile_corpus.good_jpeg()).analysis["faces"][0]["emotion"]["label"] == "happy"
        client.close()


# ---- large photos ------------------------------------------------------------------------------


def test_twenty_megabyte_photo_over_grpc(clients):
    """A 20 MB JPEG (the astronaut, 2400 px a side, beside noise) in one gRPC message, its face found."""
    rng = np.random.default_rng(1)
    canvas = rng.integers(0, 256, (3800, 5000, 3), dtype=np.uint8)
    canvas[:2400, :2400] = np.asarray(Image.fromarray(photos.astronaut()).resize((2400, 2400)))
    data = jpeg(canvas, quality=98)
    assert len(data) > 20_000_000
    answer = clients["grpc"].analyze(data)
    assert (answer.analysis["width"], answer.analysis["height"]) == (5000, 3800)
    assert [face["emotion"]["label"] for face in answer.analysis["faces"]] == ["happy"]


# ---- the client paths --------------------------------------------------------------------------


def test_cli_analyzes_on_the_server(triton, clients, tmp_path):
    photo = tmp_path / "grid.jpg"
    photo.write_bytes(jpeg(photos.fixture("emotion_classification.jpg")))
    run = subprocess.run([sys.executable, "-m", "faceserve", "analyze", str(photo), "--server",
                          f"grpc://{triton.grpc_url}"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert_same(json.loads(run.stdout), clients["http"].analyze(photo.read_bytes()).analysis)
    photo.write_bytes(b"not a photo")
    run = subprocess.run([sys.executable, "-m", "faceserve", "analyze", str(photo), "--server",
                          f"http://{triton.http_url}"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and json.loads(run.stderr)["error"] == "invalid_image", run.stderr


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_readme_client_example_runs(triton, tmp_path, protocol):
    """The README's tritonclient block, as written (gRPC), and with its HTTP alternative."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- tested: tests/integration/test_triton_pipeline.py runs this block -->\n```python\n")[1]
    code = block.split("```")[0].replace("127.0.0.1:8001", triton.grpc_url)
    if protocol == "http":
        code = code.replace("tritonclient.grpc as grpcclient", "tritonclient.http as grpcclient").replace(
            triton.grpc_url, triton.http_url)
    (tmp_path / "photo.jpg").write_bytes(jpeg(photos.astronaut()))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("1 [[") and run.stdout.rstrip().endswith("['happy']"), run.stdout
