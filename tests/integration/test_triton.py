"""The real Triton server (local, Python backend over the same model.onnx files) end to end.

One `tritonserver` for the module; the service runs on it over gRPC. The last test
kills and restarts that server, so keep it last.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from convert import parity
from faceserve.backends.triton import TritonBackend
from faceserve.dev import photos
from faceserve.dev.triton_local import LocalTriton, ensure_env
from faceserve.errors import BackendMismatch, BackendUnavailable
from faceserve.models.repository import load_spec, model_dirs, model_file
from faceserve.models.spec import ModelSpec
from tests.support import free_port, jpeg, serve
from tests.unit.pipeline.test_upright import turned

pytestmark = pytest.mark.triton

DEFAULT_MODELS = ("face_detector", "faceboxes", "blazeface_full", "face_landmarks", "emotion", "gender", "age",
                  "faceres", "embedding_dlib", "nsfw_mobilenet_v2")


@pytest.fixture(scope="module")
def specs(repository, gender_age_built) -> dict[str, ModelSpec]:
    return {d.name: load_spec(d) for d in model_dirs(repository)}


@pytest.fixture(scope="module")
def triton(repository, specs):
    with LocalTriton(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def embedded_url():
    with serve() as url:
        yield url


@pytest.fixture(scope="module")
def triton_service(triton):
    with serve({"FACESERVE_BACKEND": f"grpc://{triton.grpc_url}", "FACESERVE_BACKEND_TIMEOUT_S": "3"}) as url:
        yield url


def sample(spec: ModelSpec, rows: int, seed: int) -> np.ndarray:
    """Inputs in the range the pipeline sends (pixels scaled by the spec; any-size models at parity's size)."""
    return parity.random_inputs(spec, rows, seed)[0]


def onnx_outputs(repository: Path, spec: ModelSpec, batch: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_file(repository / spec.name)), providers=["CPUExecutionProvider"])
    return dict(zip(spec.output_names, session.run(list(spec.output_names), {spec.input_name: batch})))


def analyze(url: str, image: np.ndarray, timeout: float = 30) -> httpx.Response:
    body = {"image_base64": base64.b64encode(jpeg(image)).decode()}
    return httpx.post(f"{url}/analyze", json=body, timeout=timeout)


def model_stats(server: LocalTriton, name: str) -> dict[str, int]:
    """Rows, executions and requests of a model, from Triton's own statistics API."""
    client = httpclient.InferenceServerClient(server.http_url)
    (stats,) = client.get_inference_statistics(name)["model_stats"]
    batches = stats["batch_stats"]
    return {"rows": sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches),
            "executions": sum(b["compute_infer"]["count"] for b in batches),
            "requests": stats["inference_stats"]["success"]["count"]}


def assert_no_address(message: str, address: str) -> None:
    """Clients never learn where the backend listens (the log has it)."""
    host, port = address.rsplit(":", 1)
    assert host not in message and port not in message, message


# ---- the server itself ----------------------------------------------------


def test_server_loads_every_default_model(triton, specs):
    client = httpclient.InferenceServerClient(triton.http_url)
    assert client.get_server_metadata()["version"] == "2.51.0"
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index == {name: "READY" for name in DEFAULT_MODELS}
    for name in DEFAULT_MODELS:
        config = client.get_model_config(name)
        assert config["backend"] == "python"
        assert config["max_batch_size"] == specs[name].max_batch_size
        batching = config["dynamic_batching"]
        assert int(batching.get("max_queue_delay_microseconds", 0)) == specs[name].queue_delay_us
        assert [int(n) for n in batching.get("preferred_batch_size", [])] == list(specs[name].preferred_batch_sizes)


def test_server_environment_has_numpy_below_2():
    """With numpy 2 the bundled Python backend answers READY but with empty tensors."""
    env = ensure_env()
    version = subprocess.run([str(env.python), "-c", "import numpy; print(numpy.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert int(version.split(".")[0]) < 2, version
    assert int(np.__version__.split(".")[0]) >= 2  # the service's own environment keeps numpy 2


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_model_matches_embedded_onnxruntime(triton, repository, specs, name, protocol):
    spec = specs[name]
    batch = sample(spec, rows=5, seed=len(name))
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(triton.http_url if protocol == "http" else triton.grpc_url)
    request = module.InferInput(spec.input_name, list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    result = client.infer(name, [request], outputs=[module.InferRequestedOutput(n) for n in spec.output_names])
    expected = onnx_outputs(repository, spec, batch)
    for output, dims in zip(spec.output_names, spec.output_dims):
        got = result.as_numpy(output)
        assert got is not None and got.shape == expected[output].shape and len(got) == 5, \
            f"{name}.{output}: {None if got is None else got.shape}"
        assert all(want in (-1, size) for size, want in zip(got.shape[1:], dims))  # -1: any size
        assert got.size > 0 and np.isfinite(got).all()
        assert np.abs(got - expected[output]).max() <= 1e-5
        assert np.abs(expected[output]).max() > 0  # a real answer, not zeros


def test_backend_over_http_and_grpc_and_mismatch(triton, repository, specs):
    async def run(url: str) -> None:
        backend = TritonBackend(url, timeout_s=5)
        try:
            await backend.start(specs)
            assert await backend.ready() == {name: True for name in specs}
            for spec in specs.values():
                batch = sample(spec, rows=3, seed=7)
                got = await backend.infer(spec, batch)
                expected = onnx_outputs(repository, spec, batch)
                assert max(np.abs(got[n] - expected[n]).max() for n in spec.output_names) <= 1e-5
            wrong = dataclasses.replace(specs["emotion"], height=65)
            with pytest.raises(BackendMismatch, match=r"input input is FP32 \[-1, 64, 64, 1\]"):
                await TritonBackend(url, timeout_s=5).start({"emotion": wrong})
        finally:
            await backend.close()

    asyncio.run(run(f"grpc://{triton.grpc_url}"))
    asyncio.run(run(f"http://{triton.http_url}"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unreachable_backend_message_names_no_address_and_the_log_does(protocol, caplog):
    """No server needed: a closed port. The 503 says what failed; host:port goes to the log only."""
    address = f"127.0.0.1:{free_port()}"
    spec = ModelSpec(name="emotion", task="emotion", decoder="softmax", input_name="input", height=4, width=4,
                     channels=1, output_names=("probabilities",), output_dims=((2,),), max_batch_size=8,
                     colour="gray", scale=1.0, offset=0.0, labels=("a", "b"))

    async def run() -> BackendUnavailable:
        backend = TritonBackend(f"{protocol}://{address}", timeout_s=3)
        try:
            with pytest.raises(BackendUnavailable) as caught:
                await backend.infer(spec, np.zeros((1, 4, 4, 1), np.float32))
            return caught.value
        finally:
            await backend.close()

    with caplog.at_level(logging.WARNING, logger="faceserve.backends.triton"):
        error = asyncio.run(run())
    assert error.status == 503 and error.headers["Retry-After"]
    assert error.message.startswith("the inference backend (Triton) ") and "emotion" in error.message
    assert_no_address(error.message, address)
    logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert logged and all(address in r.getMessage() for r in logged), [r.getMessage() for r in logged]


# ---- the service on Triton -------------------------------------------------


def real_photos(fixtures) -> dict[str, tuple[np.ndarray, int | None]]:
    """Photo, and its face count when known."""
    cases = {"emotion_classification": (photos.fixture("emotion_classification.jpg"), 4),
             "astronaut": (photos.astronaut(), 1),
             # its face mesh takes several looks, turned upright (landmarks.LandmarkModel.locate)
             "grace_hopper turned 40°": (turned(photos.grace_hopper(), -40), 1)}
    cases.update({name: (image, 0) for name, image in photos.no_face_photos().items()})
    return cases


def test_service_on_triton_answers_like_embedded(embedded_url, triton_service, fixtures):
    assert httpx.get(f"{triton_service}/readyz", timeout=5).status_code == 200
    for name, (image, faces) in real_photos(fixtures).items():
        embedded = analyze(embedded_url, image)
        on_triton = analyze(triton_service, image)
        assert embedded.status_code == on_triton.status_code == 200, (name, on_triton.text)
        a, b = embedded.json(), on_triton.json()
        assert len(a["faces"]) == len(b["faces"]) == faces, name
        for fa, fb in zip(a["faces"], b["faces"]):
            for key in ("x1", "y1", "x2", "y2"):
                assert fb["box"][key] == pytest.approx(fa["box"][key], abs=1e-3)
            assert fb["score"] == pytest.approx(fa["score"], abs=1e-5)
            for head in ("emotion", "gender"):
                assert fb[head]["label"] == fa[head]["label"], (name, head)
                for label, p in fa[head]["scores"].items():
                    assert fb[head]["scores"][label] == pytest.approx(p, abs=1e-5)
            assert fb["age"] == pytest.approx(fa["age"], abs=1e-3)
    grid = analyze(triton_service, photos.fixture("emotion_classification.jpg")).json()
    assert len({f["emotion"]["label"] for f in grid["faces"]}) >= 2  # the quadrants differ


def test_dynamic_batching_under_concurrent_load(triton, triton_service, specs):
    """Through the service every request is answered and counted once; a burst of single-crop
    requests straight on Triton is merged by its dynamic batcher (the CPU config: batches stop
    at the preferred 8 rows and wait for nobody, so only requests that queue are merged)."""
    image = photos.astronaut()
    heads = ("emotion", "gender", "age", "face_landmarks", "faceboxes")  # one FaceBoxes pass: one clear face
    before = {m: model_stats(triton, m) for m in heads}
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: analyze(triton_service, image, timeout=60), range(96)))
    assert all(a.status_code == 200 and len(a.json()["faces"]) == 1 for a in answers)
    means = {}
    for m in heads:
        after = model_stats(triton, m)
        delta = {k: after[k] - before[m][k] for k in after}
        assert delta["requests"] == 96 and delta["rows"] == 96, (m, delta)
        means[m] = delta["rows"] / delta["executions"]
    print("mean batch size per model, 96 single-face requests 32 at a time through the service:",
          {m: round(v, 2) for m, v in means.items()})

    spec = specs["emotion"]
    crop = sample(spec, 1, seed=3)

    async def burst(count: int):
        import tritonclient.grpc.aio as grpcaio
        client = grpcaio.InferenceServerClient(triton.grpc_url)
        request = grpcaio.InferInput(spec.input_name, list(crop.shape), "FP32")
        request.set_data_from_numpy(crop)
        try:
            return await asyncio.gather(*(client.infer("emotion", [request]) for _ in range(count)))
        finally:
            await client.close()
    before = model_stats(triton, "emotion")
    results = asyncio.run(burst(256))
    after = model_stats(triton, "emotion")
    assert all(r.as_numpy(spec.output_names[0]).shape == (1, *spec.output_dims[0]) for r in results)
    rows, executions = after["rows"] - before["rows"], after["executions"] - before["executions"]
    print(f"burst of 256 single-crop requests: {rows} rows in {executions} executions")
    assert rows == 256 and rows / executions >= 4, (rows, executions)
    assert max(spec.preferred_batch_sizes) == 8 and executions >= 256 // 8
    metrics = httpx.get(f"http://{triton.metrics_url}/metrics", timeout=5).text
    counts = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith(("nv_inference_count{", "nv_inference_exec_count{")) and 'model="emotion"' in line}
    assert counts["nv_inference_count"] / counts["nv_inference_exec_count"] > 1.0


def test_triton_killed_then_restarted_service_recovers(triton, triton_service):
    image = photos.astronaut()
    assert analyze(triton_service, image).status_code == 200
    triton.kill()
    down = analyze(triton_service, image, timeout=10)  # bounded, never a hang (the backend timeout is 3 s)
    assert down.status_code == 503
    assert down.json()["error"] == "backend_unavailable"
    assert down.json()["message"].startswith("the inference backend (Triton) ")
    assert_no_address(down.json()["message"], triton.grpc_url)
    assert httpx.get(f"{triton_service}/readyz", timeout=10).status_code != 200

    triton.start()  # same ports; the service is not restarted
    deadline = time.monotonic() + 30
    while True:
        answer = analyze(triton_service, image)
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["faces"]) == 1
    # Each worker's readiness follows within its gRPC reconnect backoff (at most 1 s; 10 s for a loaded
    # machine): four ready answers in a row, each on a new connection that may reach either worker.
    ready_in_a_row, deadline = 0, time.monotonic() + 10
    while ready_in_a_row < 4 and time.monotonic() < deadline:
        ready = httpx.get(f"{triton_service}/readyz", timeout=10).status_code == 200
        ready_in_a_row = ready_in_a_row + 1 if ready else 0
        if not ready:
            time.sleep(0.2)
    assert ready_in_a_row == 4


def test_triton_up_but_one_model_missing(repository, specs):
    """Triton answers but does not serve `age`: not ready, and `analyze` is a 503 naming the model."""
    served = [name for name in specs if name != "age"]
    with LocalTriton(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                     models=served) as partial:
        assert sorted(partial.models) == sorted(served)
        with serve({"FACESERVE_BACKEND": f"grpc://{partial.grpc_url}", "FACESERVE_BACKEND_TIMEOUT_S": "3"},
                   wait_ready=False) as url:
            assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
            response = analyze(url, photos.astronaut())
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["error"] == "backend_unavailable"
            assert "unknown model: 'age'" in body["message"]  # Triton's own words, passed on
            assert_no_address(body["message"], partial.grpc_url)
            assert response.headers.get("retry-after")
            models = httpx.post(f"{url}/models", json={}, timeout=10)
            assert models.status_code == 200 and "age" in {m["name"] for m in models.json()["models"]}
            assert models.json()["backend"] == "triton-grpc"
            assert partial.grpc_url not in models.text and "127.0.0.1" not in models.text
