"""Models served by a Triton Inference Server, over gRPC (default) or HTTP."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

import numpy as np

from faceserve.backends import Backend
from faceserve.errors import BackendMismatch, BackendUnavailable
from faceserve.spec import ModelSpec

log = logging.getLogger(__name__)


class TritonBackend(Backend):
    kind = "triton"

    def __init__(self, url: str, timeout_s: float = 10.0):
        parsed = urlparse(url if "://" in url else f"grpc://{url}")
        if parsed.scheme not in ("grpc", "http"):
            raise ValueError(f"Triton URL must start with grpc:// or http://, got {url!r}")
        self.protocol = parsed.scheme
        self.url = parsed.netloc
        self._timeout = timeout_s
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as client
        else:
            import tritonclient.http.aio as client
        self._client_module = client
        self._client = None
        self._specs: dict[str, ModelSpec] = {}
        self._verified: set[str] = set()

    def _connection(self):
        if self._client is None:
            if self.protocol == "grpc":
                self._client = self._client_module.InferenceServerClient(self.url)
            else:
                self._client = self._client_module.InferenceServerClient(self.url, conn_timeout=self._timeout)
        return self._client

    async def _call(self, what: str, coroutine):
        """Bounded in time; every failure to reach Triton becomes a 503 for the caller."""
        try:
            return await asyncio.wait_for(coroutine, self._timeout)
        except BackendMismatch:
            raise
        except (TimeoutError, asyncio.TimeoutError):
            raise BackendUnavailable(f"Triton at {self.url} did not answer {what} within {self._timeout:g} s") from None
        except Exception as exc:  # tritonclient, grpc and aiohttp errors alike
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BackendUnavailable(f"Triton at {self.url} failed {what}: {message}") from None

    async def start(self, specs: dict[str, ModelSpec]) -> None:
        """Check every model's metadata if Triton is up; if not, check when it comes up."""
        self._specs = dict(specs)
        try:
            for spec in specs.values():
                await self._verify(spec)
        except BackendUnavailable as exc:
            log.warning("%s; models will be checked when it answers", exc.message)

    async def _verify(self, spec: ModelSpec) -> None:
        if spec.name in self._verified:
            return
        client = self._connection()
        if self.protocol == "grpc":
            meta = await self._call("metadata", client.get_model_metadata(spec.name, as_json=True))
        else:
            meta = await self._call("metadata", client.get_model_metadata(spec.name))
        check_metadata(spec, meta)
        self._verified.add(spec.name)

    async def _infer(self, spec: ModelSpec, batch: np.ndarray) -> dict[str, np.ndarray]:
        await self._verify(spec)
        mod = self._client_module
        inp = mod.InferInput(spec.input_name, list(batch.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        outputs = [mod.InferRequestedOutput(n) for n in spec.output_names]
        kwargs = {"client_timeout": self._timeout} if self.protocol == "grpc" else {}
        result = await self._call(f"inference on {spec.name}",
                                  self._connection().infer(spec.name, [inp], outputs=outputs, **kwargs))
        arrays = {n: result.as_numpy(n) for n in spec.output_names}
        for name, dims in zip(spec.output_names, spec.output_dims):
            array = arrays[name]
            if array is None or array.shape != (len(batch), *dims):
                got = None if array is None else array.shape
                raise BackendUnavailable(f"Triton returned {name} of shape {got} for {spec.name}; "
                                         f"expected {(len(batch), *dims)}")
        return arrays

    async def ready(self) -> dict[str, bool]:
        client = self._connection()
        try:
            if not await self._call("readiness", client.is_server_ready()):
                return {name: False for name in self._specs}
            states = {}
            for name in self._specs:
                states[name] = bool(await self._call("readiness", client.is_model_ready(name)))
            return states
        except BackendUnavailable:
            return {name: False for name in self._specs}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def check_metadata(spec: ModelSpec, meta: dict) -> None:
    """Names, datatypes and shapes Triton reports must match what the pipeline sends and reads."""
    problems = []
    inputs = {i["name"]: i for i in meta.get("inputs", [])}
    want_shape = [-1, *spec.input_shape]
    inp = inputs.get(spec.input_name)
    if inp is None:
        problems.append(f"no input {spec.input_name!r} (has {sorted(inputs)})")
    elif inp["datatype"] != "FP32" or _shape(inp) != want_shape:
        problems.append(f"input {spec.input_name} is {inp['datatype']} {_shape(inp)}, the pipeline sends FP32 {want_shape}")
    outputs = {o["name"]: o for o in meta.get("outputs", [])}
    for name, dims in zip(spec.output_names, spec.output_dims):
        out = outputs.get(name)
        if out is None:
            problems.append(f"no output {name!r} (has {sorted(outputs)})")
        elif out["datatype"] != "FP32" or _shape(out) != [-1, *dims]:
            problems.append(f"output {name} is {out['datatype']} {_shape(out)}, expected FP32 {[-1, *dims]}")
    if problems:
        raise BackendMismatch(f"Triton model {spec.name}: " + "; ".join(problems))


def _shape(tensor: dict) -> list[int]:
    """gRPC's JSON metadata gives int64 dims as strings; HTTP gives numbers."""
    return [int(d) for d in tensor["shape"]]
