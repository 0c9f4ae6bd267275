"""The composition root: every service of a process, built one way by `Services.build` over one `Resources`.

`service.py` (the HTTP service), the CLI and the Triton pipeline model build them so; the Triton rotate model
builds only the `ImageService` it needs, by the same `ImageService.from_settings`. Each service is one concern:

- `resources.py`: the repository, backend and pipeline, and the store with the identity stage, feedback and the
  job queue over it, each opened once per process by its first user.
- `images.py`: an image's bytes from an upload, base64 or a URL, the limits, decoding; rotation.
- `analysis.py`: `analyze`, `analyze_batch`, `annotate`, `classify`, each answer remembered for feedback.
- `identity.py`: the gallery's identities and faces, verify, identify, export, import, audit.
- `feedback.py`: remembering answers, corrections, their export and summary.
- `jobs.py`: asynchronous jobs and this process's worker.
- `models.py`: `/models`, `/models/reload` and the repository watcher, `/models/compare` (a candidate's trial).
- `reembed.py`: the gallery's faces of other embedding models embedded again by the serving one, from their
  thumbnails, over the identity stage (the CLI's `gallery reembed`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from faceserve.backends import Backend
from faceserve.services.analysis import AnalysisService
from faceserve.services.feedback import FeedbackService
from faceserve.services.identity import IdentityService
from faceserve.services.images import ImageService
from faceserve.services.jobs import JobService
from faceserve.services.models import ModelService
from faceserve.services.resources import Resources
from faceserve.settings import Settings


@dataclasses.dataclass(frozen=True)
class Services:
    resources: Resources
    images: ImageService
    analysis: AnalysisService
    identity: IdentityService
    feedback: FeedbackService
    jobs: JobService
    models: ModelService

    @classmethod
    def build(cls, settings: Settings | None = None, *, backend: Backend | None = None,
              repository: Path | None = None) -> "Services":
        """Every service over one `Resources` (`backend`, `repository`: as `Resources` takes them)."""
        resources = Resources(settings or Settings.from_env(), backend, repository)
        images = ImageService.from_settings(resources.settings, ready=resources.start)
        feedback = FeedbackService(resources)
        analysis = AnalysisService(resources, images, feedback)
        return cls(resources=resources, images=images, analysis=analysis,
                   identity=IdentityService(resources, images), feedback=feedback,
                   jobs=JobService(resources, images, analysis), models=ModelService(resources))

    async def close(self) -> None:
        await self.models.stop_watching()
        await self.jobs.worker.stop()
        await self.resources.close()


__all__ = ["Services", "Resources", "ImageService", "AnalysisService", "IdentityService", "FeedbackService",
           "JobService", "ModelService"]
