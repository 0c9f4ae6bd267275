"""The seed app under gunicorn; `bentoml serve` and the launcher itself are in faceserve.dev.devserver."""

from __future__ import annotations

import os
from pathlib import Path

from faceserve.dev.devserver import BIN, free_port, launch


def seed_gunicorn(log_dir: Path, workers: int, threads: int):
    """The seeds' design: Flask under gunicorn (threaded workers; TensorFlow does not mix with gevent)."""
    port = free_port()
    return launch([str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                   "--worker-class", "gthread", "--threads", str(threads), "--timeout", "120",
                   "benchmarks.seed_app:app"], port, "/readyz", log_dir / f"seed-{port}.log",
                  {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")},
                  timeout=300)
