"""A local Triton Inference Server for this repository (CPU, Python backend over onnxruntime).

    from faceserve.dev.triton_local import LocalTriton
    with LocalTriton(Path("model_repository"), http_port=8000, grpc_port=8001, metrics_port=8002) as server:
        ...  # server.grpc_url, server.http_url, server.metrics_url

    python -m faceserve.dev.triton_local serve --repository model_repository

See docs/triton.md. Importing this package is cheap: nothing starts until `start()`.
"""

from faceserve.dev.triton_local.env import TritonEnv, ensure_env
from faceserve.dev.triton_local.repository import build_cpu_repository, cpu_config
from faceserve.dev.triton_local.server import LocalTriton, TritonStartError

__all__ = ["LocalTriton", "TritonStartError", "TritonEnv", "ensure_env", "build_cpu_repository", "cpu_config"]
