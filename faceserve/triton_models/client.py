"""Calling faceserve's models on a Triton server from Python (tritonclient, gRPC or HTTP): the CLI's
`--server`, the tests and the benchmarks. Any other KServe v2 client does the same (README)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from faceserve.backends.triton import grpc_channel_args, parse_url
from faceserve.triton_models import configs


@dataclasses.dataclass(frozen=True)
class PipelineAnswer:
    analysis: dict  # the JSON the service's `analyze` answers
    tensors: dict[str, np.ndarray]  # every other output, without its batch dimension


def bytes_input(module, name: str, value: bytes):
    """One request's BYTES input of shape [1, 1]; `module` is any of tritonclient's grpc, http (or their aio)."""
    tensor = module.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
    return tensor


class PipelineClient:
    """`PipelineClient("grpc://127.0.0.1:8001").analyze(photo_bytes)`; Triton's errors are raised as
    `tritonclient.utils.InferenceServerException` (its message: `<code>: <our message>`)."""

    def __init__(self, url: str, timeout_s: float = 60.0):
        self.protocol, address = parse_url(url)
        self.timeout_s = timeout_s
        if self.protocol == "grpc":
            import tritonclient.grpc as module
            # the channel's message limits fit a photo of any size the service accepts
            self.client = module.InferenceServerClient(address, channel_args=grpc_channel_args())
        else:
            import tritonclient.http as module
            self.client = module.InferenceServerClient(address, connection_timeout=timeout_s,
                                                       network_timeout=timeout_s)
        self.module = module

    def _infer(self, model: str, inputs: list):
        timeout = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        return self.client.infer(model, inputs, **timeout)

    def analyze(self, photo: bytes, detector: str | None = None, identify: bool = False,
                embed: bool = False) -> PipelineAnswer:
        """With `embed` (or `identify`), `tensors["embedding"]` holds each face's unit embedding, one row per face."""
        inputs = [bytes_input(self.module, configs.IMAGE.name, photo)]
        if detector:
            inputs.append(bytes_input(self.module, "detector", detector.encode()))
        for name, asked in ((configs.IDENTIFY.name, identify), (configs.EMBED.name, embed)):
            if asked:
                flag = self.module.InferInput(name, [1, 1], "BOOL")
                flag.set_data_from_numpy(np.array([[True]]))
                inputs.append(flag)
        result = self._infer(configs.PIPELINE, inputs)
        outputs = [o["name"] for o in (result.get_response(as_json=True) if self.protocol == "grpc"
                                       else result.get_response())["outputs"]]
        tensors = {name: result.as_numpy(name)[0] for name in outputs}
        return PipelineAnswer(json.loads(tensors.pop(configs.ANALYSIS.name)[0]), tensors)

    def rotate(self, photo: bytes, degrees: int, fmt: str = "png") -> bytes:
        turn = self.module.InferInput("degrees", [1, 1], "INT32")
        turn.set_data_from_numpy(np.array([[degrees]], np.int32))
        inputs = [bytes_input(self.module, configs.IMAGE.name, photo), turn,
                  bytes_input(self.module, "format", fmt.encode())]
        return self._infer(configs.ROTATE, inputs).as_numpy(configs.ROTATE_OUTPUTS[0].name)[0][0]

    def close(self) -> None:
        self.client.close()
