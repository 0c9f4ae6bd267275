"""Models served by a Triton Inference Server, over gRPC (default) or HTTP.

Every call names the model version its spec says (`model_version`), so a request runs the versions it started
with whatever Triton holds beside them; a hot swap (`load`) only checks that Triton holds the new versions,
which `python -m convert promote --triton-url` loaded beside the serving ones (`triton_control`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import urlparse

import aiohttp
import numpy as np
from tritonclient.utils import InferenceServerException

from faceserve.backends import Backend
from faceserve.errors import BackendMismatch, BackendUnavailable, VersionNotLoaded
from faceserve.models.spec import ModelSpec
from faceserve.models.versions import model_ref

log = logging.getLogger(__name__)

# Statuses only Triton itself sends (gRPC codes as tritonclient spells them, HTTP codes): their
# message is Triton's words about the request. UNAVAILABLE, DEADLINE_EXCEEDED and the like may come
# from the transport instead, with the address in them.
TRITON_ANSWERS = frozenset({"StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT", "StatusCode.UNIMPLEMENTED",
                            "StatusCode.FAILED_PRECONDITION", "StatusCode.ALREADY_EXISTS",
                            "StatusCode.OUT_OF_RANGE", "400", "404"})


# gRPC waits out an exponential backoff (120 s at most by default) before a channel that failed tries
# again: a restarted Triton would stay unreachable from a worker that saw it down for minutes.
MAX_RECONNECT_BACKOFF_MS = 1000


def grpc_channel_args() -> list[tuple[str, int]]:
    """tritonclient's own channel arguments (message sizes, keep-alive), with a bounded reconnect backoff."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)]


def parse_url(url: str) -> tuple[str, str]:
    """(protocol, host:port) of a Triton URL: grpc://host:8001 (also a bare host:port) or http://host:8000."""
    parsed = urlparse(url if "://" in url else f"grpc://{url}")
    if parsed.scheme not in ("grpc", "http"):
        raise ValueError(f"Triton URL must start with grpc:// or http://, got {url!r}")
    return parsed.scheme, parsed.netloc


class TritonBackend(Backend):
    kind = "triton"

    def __init__(self, url: str, timeout_s: float = 10.0):
        self.protocol, self.url = parse_url(url)
        self._timeout = timeout_s
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as client
        else:
            import tritonclient.http.aio as client
        self._client_module = client
        self._client = None
        self._specs: dict[str, ModelSpec] = {}  # by `name:version`: a trial's candidate beside its serving version
        self._verified: set[tuple[str, str]] = set()  # (name, version) whose metadata matched

    def _connection(self):
        if self._client is None:
            if self.protocol == "grpc":
                self._client = self._client_module.InferenceServerClient(self.url, channel_args=grpc_channel_args())
            else:
                self._client = self._client_module.InferenceServerClient(self.url, conn_timeout=self._timeout)
        return self._client

    async def _call(self, what: str, coroutine):
        """Bounded in time; every failure to reach Triton becomes a 503 for the caller. The caller's
        message never names the backend's address (the log does)."""
        try:
            return await asyncio.wait_for(coroutine, self._timeout)
        except TimeoutError:
            detail = public = f"did not answer {what} within {self._timeout:g} s"
        except InferenceServerException as exc:
            detail = str(exc)
            # Triton's own answers (unknown model, bad input) help the caller; a transport error
            # ("failed to connect to all addresses; ... ipv4:10.0.0.5:8001 ...") names the address.
            answered = exc.status() in TRITON_ANSWERS and exc.message()
            public = (f"failed {what}: {exc.message().splitlines()[0]}" if answered
                      else f"is unavailable ({what})")
        except (aiohttp.ClientError, OSError) as exc:
            detail, public = f"{type(exc).__name__}: {exc}", f"is unreachable ({what})"
        log.warning("Triton at %s (%s): %s: %s", self.url, self.protocol, what, detail)
        raise BackendUnavailable(f"the inference backend (Triton) {public}") from None

    async def start(self, specs: dict[str, ModelSpec]) -> None:
        """Check every model's metadata if Triton is up; if not, check when it comes up."""
        self._specs = {model_ref(spec.name, spec.version): spec for spec in specs.values()}
        try:
            for spec in specs.values():
                await self._verify(spec)
        except BackendUnavailable as exc:
            log.warning("%s; models will be checked when it answers", exc.message)

    async def _verify(self, spec: ModelSpec) -> None:
        if (spec.name, spec.version) in self._verified:
            return
        client = self._connection()
        ref = model_ref(spec.name, spec.version)
        if self.protocol == "grpc":
            meta = await self._call(f"metadata of {ref}",
                                    client.get_model_metadata(spec.name, spec.version, as_json=True))
        else:
            meta = await self._call(f"metadata of {ref}", client.get_model_metadata(spec.name, spec.version))
        check_metadata(spec, meta)
        self._verified.add((spec.name, spec.version))

    async def load(self, specs: dict[str, ModelSpec]) -> None:
        """A hot swap's first half, or a trial's candidate beside its serving version: Triton must already hold each
        new version (loaded beside the serving one by `python -m convert promote|shadow|canary --triton-url`); its
        metadata is checked, and from now on the requests that run it pin it."""
        client = self._connection()
        for spec in specs.values():
            ref = model_ref(spec.name, spec.version)
            if not await self._call(f"readiness of {ref}", client.is_model_ready(spec.name, spec.version)):
                raise VersionNotLoaded(
                    f"Triton does not hold {ref}; load it beside the serving version with `python -m convert "
                    f"promote {spec.name} {spec.version} --triton-url URL` (or `rollback`, or `shadow` or `canary` "
                    f"for a candidate), then reload")
            try:
                await self._verify(spec)
            except BackendMismatch as exc:
                raise VersionNotLoaded(str(exc)) from None
        self._specs.update({model_ref(spec.name, spec.version): spec for spec in specs.values()})

    async def unload(self, specs: list[ModelSpec]) -> None:
        """No longer asked for readiness. Triton keeps the version served before loaded (a rollback finds it there)
        until the next `load_beside` replaces it."""
        for spec in specs:
            self._specs.pop(model_ref(spec.name, spec.version), None)

    async def _infer(self, spec: ModelSpec, batch: np.ndarray) -> dict[str, np.ndarray]:
        await self._verify(spec)
        mod = self._client_module
        inp = mod.InferInput(spec.input_name, list(batch.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        outputs = [mod.InferRequestedOutput(n) for n in spec.output_names]
        kwargs = {"client_timeout": self._timeout} if self.protocol == "grpc" else {}
        result = await self._call(f"inference on {model_ref(spec.name, spec.version)}",
                                  self._connection().infer(spec.name, [inp], model_version=spec.version,
                                                           outputs=outputs, **kwargs))
        arrays = {n: result.as_numpy(n) for n in spec.output_names}
        for name, dims in zip(spec.output_names, spec.output_dims):
            array = arrays[name]
            if array is None or not _fits(array.shape, (len(batch), *dims)):
                got = None if array is None else array.shape
                raise BackendUnavailable(f"the inference backend (Triton) returned {name} of shape {got} "
                                         f"for {spec.name}; expected {(len(batch), *dims)}")
        return arrays

    async def ready(self) -> dict[str, bool]:
        client = self._connection()
        try:
            if not await self._call("readiness", client.is_server_ready()):
                return {spec.name: False for spec in self._specs.values()}
            states: dict[str, bool] = {}
            for ref, spec in self._specs.items():  # a model is ready when every version it runs is
                ready = bool(await self._call(f"readiness of {ref}", client.is_model_ready(spec.name, spec.version)))
                states[spec.name] = states.get(spec.name, True) and ready
            return states
        except BackendUnavailable:
            return {spec.name: False for spec in self._specs.values()}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def check_metadata(spec: ModelSpec, meta: dict) -> None:
    """Names, datatypes and shapes Triton reports must match what the pipeline sends and reads (a dim Triton
    leaves free, -1, takes any: two versions loaded side by side under one config)."""
    problems = []
    inputs = {i["name"]: i for i in meta.get("inputs", [])}
    want_shape = [-1, *spec.input_shape]
    inp = inputs.get(spec.input_name)
    if inp is None:
        problems.append(f"no input {spec.input_name!r} (has {sorted(inputs)})")
    elif inp["datatype"] != "FP32" or not _fits(want_shape, _shape(inp)):
        problems.append(f"input {spec.input_name} is {inp['datatype']} {_shape(inp)}, the pipeline sends FP32 {want_shape}")
    outputs = {o["name"]: o for o in meta.get("outputs", [])}
    for name, dims in zip(spec.output_names, spec.output_dims):
        out = outputs.get(name)
        if out is None:
            problems.append(f"no output {name!r} (has {sorted(outputs)})")
        elif out["datatype"] != "FP32" or not _fits([-1, *dims], _shape(out)):
            problems.append(f"output {name} is {out['datatype']} {_shape(out)}, expected FP32 {[-1, *dims]}")
    if problems:
        raise BackendMismatch(f"Triton model {spec.name}: " + "; ".join(problems))


def _fits(shape: Sequence[int], expected: Sequence[int]) -> bool:
    """`shape` is `expected`, where -1 (a dynamic dim) matches any size."""
    return len(shape) == len(expected) and all(e in (-1, s) for s, e in zip(shape, expected))


def _shape(tensor: dict) -> list[int]:
    """gRPC's JSON metadata gives int64 dims as strings; HTTP gives numbers."""
    return [int(d) for d in tensor["shape"]]
