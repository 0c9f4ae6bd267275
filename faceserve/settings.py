"""Service configuration from FACESERVE_* environment variables, with safe defaults."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from faceserve.imaging import DecodeLimits

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(f"FACESERVE_{name}", default)


@dataclasses.dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 20_000
    max_faces: int = 100
    max_batch_images: int = 16
    max_top_k: int = 100

    @property
    def decode(self) -> DecodeLimits:
        return DecodeLimits(max_pixels=self.max_pixels, max_side=self.max_side)


@dataclasses.dataclass(frozen=True)
class Settings:
    repository: Path
    backend: str  # "onnxruntime" or a Triton URL (grpc://host:8001, http://host:8000)
    ort_threads: int
    backend_timeout_s: float
    limits: Limits

    @classmethod
    def from_env(cls) -> "Settings":
        defaults = Limits()
        limits = Limits(**{
            f.name: int(_env(f.name.upper(), str(getattr(defaults, f.name))))
            for f in dataclasses.fields(Limits)
        })
        return cls(
            repository=Path(_env("MODEL_REPOSITORY", str(PROJECT_ROOT / "model_repository"))),
            backend=_env("BACKEND", "onnxruntime"),
            ort_threads=int(_env("ORT_THREADS", "1")),
            backend_timeout_s=float(_env("BACKEND_TIMEOUT_S", "10")),
            limits=limits,
        )
