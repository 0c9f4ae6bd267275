"""The embedded backend: onnxruntime in this process, with dynamic batching per model."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from faceserve.backends import Backend
from faceserve.backends.batching import DynamicBatcher
from faceserve.errors import BackendMismatch
from faceserve.models.repository import model_file
from faceserve.models.spec import ModelSpec


def _dims(shape: list) -> list[int]:
    """A tensor's dims after the batch, a named (dynamic) dim as -1, as the config writes it."""
    return [d if isinstance(d, int) else -1 for d in shape[1:]]


def check_session(spec: ModelSpec, session: ort.InferenceSession) -> None:
    """The ONNX file must take and give exactly what the spec says."""
    (inp,) = session.get_inputs()
    problems = []
    if inp.name != spec.input_name or inp.type != "tensor(float)" or _dims(inp.shape) != list(spec.input_shape):
        problems.append(f"input {inp.name} {inp.type} {inp.shape} != {spec.input_name} float [-1, "
                        f"{', '.join(map(str, spec.input_shape))}]")
    outputs = {o.name: _dims(o.shape) for o in session.get_outputs()}
    for name, dims in zip(spec.output_names, spec.output_dims):
        if outputs.get(name) != list(dims):
            problems.append(f"output {name} {outputs.get(name)} != {list(dims)}")
    if problems:
        raise BackendMismatch(f"{spec.name}: " + "; ".join(problems))


class OnnxRuntimeBackend(Backend):
    """Sessions and batchers by model *version*: a new version loads beside the serving one, and each call runs the
    version its spec names, so a swap never mixes two versions in one call."""

    kind = "onnxruntime"

    def __init__(self, repository: Path, threads: int = 1, batch_delay_us: int | None = None):
        self._repository = repository
        self._threads = threads
        self._batch_delay_us = batch_delay_us  # None: each model's own (its config's max_queue_delay)
        self._batchers: dict[tuple[str, str], DynamicBatcher] = {}
        self._executor: ThreadPoolExecutor | None = None

    async def start(self, specs: dict[str, ModelSpec]) -> None:
        # room for every model and, during a swap, one new version of each
        self._executor = ThreadPoolExecutor(max_workers=max(2, 2 * len(specs)), thread_name_prefix="ort")
        await self.load(specs)

    def _session(self, spec: ModelSpec) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model_file(self._repository / spec.name, spec.version)), options,
                                       providers=["CPUExecutionProvider"])
        check_session(spec, session)
        return session

    async def load(self, specs: dict[str, ModelSpec]) -> None:
        for spec in specs.values():
            if _key(spec) in self._batchers:
                continue
            # off the event loop: requests go on being answered while a new version loads
            session = await asyncio.get_running_loop().run_in_executor(self._executor, self._session, spec)
            delay_us = spec.queue_delay_us if self._batch_delay_us is None else self._batch_delay_us
            self._batchers[_key(spec)] = DynamicBatcher(
                self._runner(spec, session), self._executor, max_batch_size=spec.max_batch_size,
                max_queue_delay_s=delay_us / 1e6, preferred_batch_sizes=spec.preferred_batch_sizes)

    async def unload(self, specs: list[ModelSpec]) -> None:
        for spec in specs:
            batcher = self._batchers.pop(_key(spec), None)
            if batcher is not None:
                await batcher.close()

    @staticmethod
    def _runner(spec: ModelSpec, session: ort.InferenceSession):
        names = list(spec.output_names)

        def run(batch: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, {spec.input_name: batch})))
        return run

    async def _infer(self, spec: ModelSpec, batch: np.ndarray) -> dict[str, np.ndarray]:
        return await self._batchers[_key(spec)].submit(batch)

    async def ready(self) -> dict[str, bool]:
        return {name: True for name, _ in self._batchers}

    def statistics(self) -> dict[str, dict[str, int]]:
        """By model name (the version loaded last, where a swap holds two)."""
        return {name: {"executions": b.batches, "rows": b.rows} for (name, _), b in self._batchers.items()}

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        if self._executor:
            self._executor.shutdown(wait=False)


def _key(spec: ModelSpec) -> tuple[str, str]:
    return spec.name, spec.version
