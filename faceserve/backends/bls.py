"""Models called from inside Triton through business-logic scripting (BLS): the pipeline model's backend.

Only a Python-backend model running in Triton can use it (`faceserve.triton_models`): each `infer` is a
`pb_utils.InferenceRequest` to a sibling model, awaited with `async_exec`, so the sibling's dynamic
batcher merges the crops of every pipeline request in flight. Each call names the version its spec says,
as the Triton backend's do: Triton may hold two versions of a model (a promotion's), and would otherwise
run the highest. `pb_utils` (the Python backend's
`triton_python_backend_utils`) is given to the constructor: importing this module needs no Triton.
"""

from __future__ import annotations

import asyncio

import numpy as np

from faceserve.backends import Backend
from faceserve.errors import BackendUnavailable, VersionNotLoaded
from faceserve.models.spec import ModelSpec
from faceserve.models.versions import model_ref


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
            model_name=spec.name, model_version=int(spec.version), requested_output_names=list(spec.output_names),
            inputs=[pb.Tensor(spec.input_name, np.ascontiguousarray(batch, dtype=np.float32))])
        response = await request.async_exec()
        if response.has_error():
            raise BackendUnavailable(f"the inference backend (Triton) failed inference on "
                                     f"{model_ref(spec.name, spec.version)}: "
                                     f"{response.error().message().splitlines()[0]}")
        return {name: pb.get_output_tensor_by_name(response, name).as_numpy() for name in spec.output_names}

    async def load(self, specs: dict[str, ModelSpec]) -> None:
        """A hot swap's first half: Triton must hold each new version already (`python -m convert promote
        --triton-url` loads it beside the serving one)."""
        for spec in specs.values():
            if not await asyncio.to_thread(self._pb.is_model_ready, spec.name, spec.version):
                raise VersionNotLoaded(f"Triton does not hold {model_ref(spec.name, spec.version)}; promote it with "
                                       f"`python -m convert promote {spec.name} {spec.version} --triton-url URL`")
        self._specs.update(specs)

    async def unload(self, specs: list[ModelSpec]) -> None:
        """Nothing to let go: Triton keeps the version served before (`faceserve.backends.triton_control`)."""

    async def ready(self) -> dict[str, bool]:
        return {name: await asyncio.to_thread(self._pb.is_model_ready, name, spec.version)
                for name, spec in self._specs.items()}
