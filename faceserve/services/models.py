"""`/models`: what is loaded (each model's serving version, and every version built beside it with its source and
parity), and what the manifest declares that is not built."""

from __future__ import annotations

from pydantic import BaseModel, Field

from faceserve.models.versions import version_records
from faceserve.services.resources import Resources


class ModelsInfo(BaseModel):
    backend: str
    repository: str
    models: list[dict] = Field(description="each model's serving spec; `versions`: every built version, whether it "
                                           "serves, its source and its parity evidence")
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
            models=[{**spec.describe(), "versions": version_records(repository.path / name)}
                    for name, spec in repository.specs.items()],
            missing=repository.missing,
            detectors=pipeline.detectors,
            default_detector=pipeline.default_detector,
        )
