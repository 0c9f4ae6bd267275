"""`/models`: what is loaded, and what the manifest declares that is not built."""

from __future__ import annotations

from pydantic import BaseModel, Field

from faceserve.services.resources import Resources


class ModelsInfo(BaseModel):
    backend: str
    repository: str
    models: list[dict]
    missing: list[str] = Field(description="models the manifest declares that are not built")
    detectors: list[str]
    default_detector: str


class ModelService:
    def __init__(self, resources: Resources):
        self.resources = resources

    def info(self) -> ModelsInfo:
        pipeline, repository = self.resources.pipeline, self.resources.repository
        backend = pipeline.backend
        return ModelsInfo(
            backend=f"triton-{backend.protocol}" if backend.kind == "triton" else backend.kind,
            repository=repository.path.name,  # the full path is logged at start-up, not served
            models=[spec.describe() for spec in repository.specs.values()],
            missing=repository.missing,
            detectors=pipeline.detectors,
            default_detector=pipeline.default_detector,
        )
