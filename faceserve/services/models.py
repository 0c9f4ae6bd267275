"""`/models`: what is loaded (each model's serving version, and every version built beside it with its source and
parity), and what the manifest declares that is not built; `/models/reload` and the watcher: a promoted or rolled
back version, or a trial of a candidate, served without a restart; `/models/compare`: a model's trials reported."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pydantic import BaseModel, Field

from faceserve.errors import NotFound
from faceserve.feedback.comparisons import ComparisonReport, report
from faceserve.models.calibration import calibration_for
from faceserve.models.tasks import EMBEDDING
from faceserve.models.versions import model_ref, version_records
from faceserve.services.resources import Resources

log = logging.getLogger(__name__)


class ModelsInfo(BaseModel):
    backend: str
    repository: str
    models: list[dict] = Field(description="each model's serving spec; `versions`: every built version, whether it "
                                           "serves, its source and its parity evidence; an embedding's "
                                           "`calibration` (null: none applies to its file) and `operating_point`")
    missing: list[str] = Field(description="models the manifest declares that are not built")
    detectors: list[str]
    default_detector: str
    default_detector_reason: str = Field(description="why the default detector is the default, with its measurements")


class Swap(BaseModel):
    model: str
    from_version: str
    to_version: str


class ModelsReloaded(BaseModel):
    swapped: list[Swap] = Field(description="the models this worker now serves another version of")
    serving: list[str] = Field(description="every model this worker serves, as name:version")
    trials: list[dict] = Field(description="the candidates this worker runs: model, mode, candidate, share")


class ModelService:
    def __init__(self, resources: Resources):
        self.resources = resources
        self._watcher: asyncio.Task | None = None

    async def reload(self) -> ModelsReloaded:
        swapped = await self.resources.reload()
        return ModelsReloaded(
            swapped=[Swap(model=new.name, from_version=old.version, to_version=new.version) for old, new in swapped],
            serving=[model_ref(spec.name, spec.version) for spec in self.resources.repository.specs.values()],
            trials=[{"model": c.head.spec.name, **c.trial.describe(c.head.spec.name)}
                    for c in self.resources.pipeline.trials.values()])

    def trial(self, name: str) -> dict | None:
        """The trial the model runs now in this worker (None: none)."""
        spec = self.resources.repository.specs.get(name)
        candidate = self.resources.pipeline.trials.get(spec.task) if spec is not None else None
        return candidate.trial.describe(name) if candidate is not None else None

    async def compare(self, name: str) -> ComparisonReport:
        """The comparison report of a face head's trials, from the store (every worker's and replica's)."""
        heads = {spec.name: spec for spec in self.resources.repository.heads.values()}
        if name not in heads:
            raise NotFound(f"no face head named {name!r}; the face heads are {', '.join(sorted(heads)) or 'none'}",
                           code="unknown_model")
        spec = heads[name]
        feedback = await self.resources.feedback()
        return await asyncio.to_thread(report, feedback.store, name, spec.task, bool(spec.labels), self.trial(name))

    def start_watching(self) -> None:
        """Every `models_watch_s`, serve what the repository's configs say (each worker watches for itself)."""
        every = self.resources.settings.models_watch_s
        if every > 0 and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(every))

    async def _watch(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.resources.reload_if_changed()
            except Exception:  # the watcher outlives any one bad look at the disk
                log.exception("watching the model repository")

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    def _calibration(self, spec) -> dict:
        """An embedding model's calibration (null: none applies to its file), whether it serves or searches the
        identities enrolled under it (`earlier`), and the operating point it does that at."""
        found = calibration_for(spec, self.resources.repository.model_file(spec.name))
        serving = spec.name == self.resources.repository.serving_embedding
        point = self.resources.operating_point if serving else self.resources.earlier_operating_points[spec.name]
        return {"calibration": found.describe() if found else None, "embedding_role": "serving" if serving else "earlier",
                "operating_point": point.model_dump() if point else None}

    def info(self) -> ModelsInfo:
        pipeline, repository = self.resources.pipeline, self.resources.repository
        backend = pipeline.backend
        return ModelsInfo(
            backend=f"triton-{backend.protocol}" if backend.kind == "triton" else backend.kind,
            repository=repository.path.name,  # the full path is logged at start-up, not served
            models=[{**spec.describe(), "versions": version_records(repository.path / name),
                     **({"trial": self.trial(name)} if self.trial(name) else {}),
                     **(self._calibration(spec) if spec.task == EMBEDDING else {})}
                    for name, spec in repository.specs.items()],
            missing=repository.missing,
            detectors=pipeline.detectors,
            default_detector=pipeline.default_detector,
            default_detector_reason=pipeline.default_detector_reason,
        )
