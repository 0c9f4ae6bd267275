"""Models called from inside Triton through business-logic scripting (BLS): the pipeline model's backend.

Only a Python-backend model running in Triton can use it (`faceserve.triton_models`): each `infer` is a
`pb_utils.InferenceRequest` to a sibling model, awaited with `async_exec`, so the sibling's dynamic
batcher merges the crops of every pipeline request in flight. `pb_utils` (the Python backend's
`triton_python_backend_utils`) is given to the constructor: importing this module needs no Triton.
"""

from __future__ import annotations

import asyncio

import numpy as np

from faceserve.backends import Backend
from faceserve.errors import BackendUnavailable
from faceserve.models.spec import ModelSpec


class BlsBackend(Backend):
    kind = "triton-bls"

    def __init__(self, pb_utils):
        self._pb = pb_utils
        self._specs: dict[str, ModelSpec] = {}

    async def start(self, specs: dict[str, ModelSpec]) -> None:
        # Triton loaded these models itself; the pipeline model's config names none of them, so a missing one
        # is reported by the first request that needs it (Triton's "unknown model" passed on).
        self._specs = dict(specs)

    async def _infer(self, spec: ModelSpec, batch: np.ndarray) -> dict[str, np.ndarray]:
        pb = self._pb
        request = pb.InferenceRequest(
            model_name=spec.name, requested_output_names=list(spec.output_names),
            inputs=[pb.Tensor(spec.input_name, np.ascontiguousarray(batch, dtype=np.float32))])
        response = await request.async_exec()
        if response.has_error():
            raise BackendUnavailable(f"the inference backend (Triton) failed inference on {spec.name}: "
                                     f"{response.error().message().splitlines()[0]}")
        return {name: pb.get_output_tensor_by_name(response, name).as_numpy() for name in spec.output_names}

    async def ready(self) -> dict[str, bool]:
        return {name: await asyncio.to_thread(self._pb.is_model_ready, name) for name in self._specs}
