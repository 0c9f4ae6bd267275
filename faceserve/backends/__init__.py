"""One small interface to run a model on a batch, whatever serves it.

Backends never preprocess: they receive the float32 NHWC batch the pipeline made
and return the raw output tensors by name.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from faceserve.errors import RestartRequired
from faceserve.models.spec import ModelSpec


class Backend(abc.ABC):
    """Runs models of a repository; `infer` splits batches larger than max_batch_size."""

    kind: str

    @abc.abstractmethod
    async def start(self, specs: dict[str, ModelSpec]) -> None:
        """Load or connect; raise BackendMismatch when a model differs from its spec."""

    @abc.abstractmethod
    async def _infer(self, spec: ModelSpec, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch of at most spec.max_batch_size rows."""

    @abc.abstractmethod
    async def ready(self) -> dict[str, bool]:
        """Readiness of each model this backend serves."""

    async def load(self, specs: dict[str, ModelSpec]) -> None:
        """Load these model versions beside the ones loaded (a hot swap's first half); `infer` runs the version its
        spec names."""
        raise RestartRequired(f"the {self.kind} backend does not load a new model version in place; restart the "
                              f"service to serve it")

    async def unload(self, specs: list[ModelSpec]) -> None:
        """Let go of these model versions, which no request uses any more (a hot swap's second half)."""

    async def close(self) -> None:
        return None

    async def infer(self, spec: ModelSpec, batch: np.ndarray) -> dict[str, np.ndarray]:
        if len(batch) == 0:
            return {n: np.zeros((0, *d), np.float32) for n, d in zip(spec.output_names, spec.output_dims)}
        limit = spec.max_batch_size
        if len(batch) <= limit:
            return await self._infer(spec, batch)
        parts = [await self._infer(spec, batch[i:i + limit]) for i in range(0, len(batch), limit)]
        return {n: np.concatenate([p[n] for p in parts]) for n in spec.output_names}


def create(url: str, repository: Path, *, threads: int = 1, timeout_s: float = 10.0,
           batch_delay_us: int | None = None) -> Backend:
    """`onnxruntime` (embedded) or a Triton URL such as grpc://host:8001 or http://host:8000.
    `batch_delay_us` overrides the embedded batcher's queue delay of every model (Triton keeps its configs')."""
    if url in ("", "onnxruntime", "embedded"):
        from faceserve.backends.onnx import OnnxRuntimeBackend
        return OnnxRuntimeBackend(repository, threads=threads, batch_delay_us=batch_delay_us)
    from faceserve.backends.triton import TritonBackend
    return TritonBackend(url, timeout_s=timeout_s)
