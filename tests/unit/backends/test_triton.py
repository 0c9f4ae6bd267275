"""The Triton backend without a server: URLs, the metadata check, request building and error mapping."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from faceserve.backends.triton import MAX_RECONNECT_BACKOFF_MS, TritonBackend, check_metadata, grpc_channel_args, \
    parse_url
from faceserve.errors import BackendMismatch, BackendUnavailable, VersionNotLoaded
from faceserve.models.spec import ModelSpec

SPEC = ModelSpec(name="emotion", task="emotion", decoder="softmax", input_name="input", height=64, width=64,
                 channels=1, output_names=("probabilities",), output_dims=((7,),), colour="gray", scale=1.0,
                 offset=0.0, labels=("a", "b", "c", "d", "e", "f", "g"))


def metadata(input_shape=("-1", "64", "64", "1"), output_shape=("-1", "7"), datatype="FP32") -> dict:
    """As gRPC's JSON metadata gives it: int64 dims as strings."""
    return {"name": "emotion", "inputs": [{"name": "input", "datatype": datatype, "shape": list(input_shape)}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": list(output_shape)}]}


def test_urls_name_the_protocol_and_a_bare_address_is_grpc():
    assert parse_url("grpc://triton:8001") == ("grpc", "triton:8001")
    assert parse_url("http://triton:8000") == ("http", "triton:8000")
    assert parse_url("triton:8001") == ("grpc", "triton:8001")
    with pytest.raises(ValueError, match="must start with grpc:// or http://, got 'https://triton:8000'"):
        parse_url("https://triton:8000")


def test_grpc_reconnects_within_a_second():
    args = dict(grpc_channel_args())
    assert args["grpc.max_reconnect_backoff_ms"] == MAX_RECONNECT_BACKOFF_MS == 1000
    assert args["grpc.initial_reconnect_backoff_ms"] == args["grpc.min_reconnect_backoff_ms"] == 100


def test_metadata_that_matches_passes_as_grpc_strings_and_as_http_numbers():
    check_metadata(SPEC, metadata())
    check_metadata(SPEC, metadata(input_shape=(-1, 64, 64, 1), output_shape=(-1, 7)))


def test_metadata_that_differs_is_refused_with_every_difference():
    with pytest.raises(BackendMismatch) as shapes:
        check_metadata(SPEC, metadata(input_shape=("-1", "48", "48", "1"), output_shape=("-1", "8"), datatype="FP16"))
    assert str(shapes.value) == ("Triton model emotion: input input is FP16 [-1, 48, 48, 1], the pipeline sends FP32 "
                                 "[-1, 64, 64, 1]; output probabilities is FP32 [-1, 8], expected FP32 [-1, 7]")
    with pytest.raises(BackendMismatch) as names:
        check_metadata(SPEC, {"inputs": [{"name": "x", "datatype": "FP32", "shape": []}], "outputs": []})
    assert str(names.value) == ("Triton model emotion: no input 'input' (has ['x']); "
                                "no output 'probabilities' (has [])")


def test_a_dim_triton_leaves_free_takes_the_specs_and_a_fixed_one_must_match():
    """Two versions loaded side by side (64x64 and 48x48 crops) under one config whose dims are -1."""
    check_metadata(SPEC, metadata(input_shape=("-1", "-1", "-1", "1")))
    with pytest.raises(BackendMismatch, match=r"input input is FP32 \[-1, -1, -1, 3\]"):
        check_metadata(SPEC, metadata(input_shape=("-1", "-1", "-1", "3")))


class FakeResult:
    def __init__(self, arrays: dict[str, np.ndarray]):
        self._arrays = arrays

    def as_numpy(self, name: str):
        return self._arrays.get(name)


class FakeClient:
    """Records what the backend sends; answers `answer(rows)` or raises `error`."""

    def __init__(self, answer=None, error: Exception | None = None, held: tuple[str, ...] = ("1",)):
        self.answer, self.error, self.calls, self.held = answer, error, [], held
        self.metadata = metadata()

    async def get_model_metadata(self, name, version="", as_json=False):
        self.calls.append(("metadata", name, version, as_json))
        return self.metadata

    async def is_model_ready(self, name, version=""):
        self.calls.append(("ready", name, version))
        return version in self.held

    async def infer(self, name, inputs, model_version="", outputs=None, **options):
        self.calls.append(("infer", name, inputs, model_version, outputs, options))
        if self.error:
            raise self.error
        (inp,) = inputs
        return FakeResult(self.answer(inp.shape()[0]))


def backend_with(client: FakeClient, url: str = "grpc://triton:8001") -> TritonBackend:
    backend = TritonBackend(url, timeout_s=2.5)
    backend._client = client
    return backend


def test_a_request_names_the_model_input_and_outputs_and_checks_metadata_once():
    client = FakeClient(answer=lambda rows: {"probabilities": np.full((rows, 7), 1 / 7, np.float32)})
    backend = backend_with(client)
    batch = np.zeros((3, 64, 64, 1), np.float64)
    for _ in range(2):
        outputs = asyncio.run(backend.infer(SPEC, batch))
        assert outputs["probabilities"].shape == (3, 7)
    assert [call[0] for call in client.calls] == ["metadata", "infer", "infer"]
    assert client.calls[0] == ("metadata", "emotion", "1", True)
    _, name, (inp,), version, requested, options = client.calls[1]
    assert (name, version, inp.name(), inp.shape(), inp.datatype()) == ("emotion", "1", "input", [3, 64, 64, 1],
                                                                         "FP32")
    assert len(inp._get_content()) == 3 * 64 * 64 * 4  # sent as float32 whatever the pipeline's dtype
    assert [o.name() for o in requested] == ["probabilities"] and options == {"client_timeout": 2.5}


def test_an_answer_of_the_wrong_shape_is_unavailable_not_a_crash():
    backend = backend_with(FakeClient(answer=lambda rows: {"probabilities": np.zeros((rows, 6), np.float32)}))
    with pytest.raises(BackendUnavailable) as wrong:
        asyncio.run(backend.infer(SPEC, np.zeros((2, 64, 64, 1), np.float32)))
    assert wrong.value.message == ("the inference backend (Triton) returned probabilities of shape (2, 6) for "
                                   "emotion; expected (2, 7)")
    assert wrong.value.status == 503 and wrong.value.code == "backend_unavailable"


@pytest.mark.parametrize("error,public", [
    (InferenceServerException("unknown model: 'emotion'\nmore", status="StatusCode.NOT_FOUND"),
     "failed inference on emotion:1: unknown model: 'emotion'"),
    (InferenceServerException("failed to connect to all addresses; ipv4:10.0.0.5:8001", status="StatusCode.UNAVAILABLE"),
     "is unavailable (inference on emotion:1)"),
    (ConnectionRefusedError("10.0.0.5:8000 refused"), "is unreachable (inference on emotion:1)"),
])
def test_triton_errors_become_unavailable_without_the_address(error, public):
    backend = backend_with(FakeClient(error=error))
    backend._verified.add(("emotion", "1"))
    with pytest.raises(BackendUnavailable) as failed:
        asyncio.run(backend.infer(SPEC, np.zeros((1, 64, 64, 1), np.float32)))
    assert failed.value.message == f"the inference backend (Triton) {public}"
    assert "10.0.0.5" not in failed.value.message and failed.value.headers == {"Retry-After": "1"}


def test_a_call_past_the_timeout_is_unavailable():
    backend = TritonBackend("http://triton:8000", timeout_s=0.01)
    with pytest.raises(BackendUnavailable) as late:
        asyncio.run(backend._call("readiness", asyncio.sleep(1)))
    assert late.value.message == "the inference backend (Triton) did not answer readiness within 0.01 s"


V2 = dataclasses.replace(SPEC, version="2", height=48, width=48)


def test_every_call_pins_its_specs_version_and_checks_that_versions_metadata():
    client = FakeClient(answer=lambda rows: {"probabilities": np.full((rows, 7), 1 / 7, np.float32)}, held=("1", "2"))
    client.metadata = metadata(input_shape=("-1", "-1", "-1", "1"))  # as Triton holds the two side by side
    backend = backend_with(client)
    asyncio.run(backend.load({"emotion": V2}))
    asyncio.run(backend.infer(V2, np.zeros((1, 48, 48, 1), np.float32)))
    asyncio.run(backend.infer(SPEC, np.zeros((1, 64, 64, 1), np.float32)))  # a request still on version 1
    assert [call[:3] for call in client.calls if call[0] != "infer"] == [
        ("ready", "emotion", "2"), ("metadata", "emotion", "2"), ("metadata", "emotion", "1")]
    assert [(call[1], call[3]) for call in client.calls if call[0] == "infer"] == [("emotion", "2"), ("emotion", "1")]


def test_a_version_triton_does_not_hold_is_refused_by_the_swap():
    backend = backend_with(FakeClient(held=("1",)))
    with pytest.raises(VersionNotLoaded) as refused:
        asyncio.run(backend.load({"emotion": V2}))
    assert refused.value.status == 409 and refused.value.code == "version_not_loaded"
    assert refused.value.message.startswith("Triton does not hold emotion:2; load it beside the serving version with "
                                            "`python -m convert promote emotion 2 --triton-url URL`")
