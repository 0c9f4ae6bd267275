"""What every service of a process shares, each opened once: the model repository, the backend and the pipeline
over them (built at once), and the store with the gallery's identity stage, feedback and the job queue over it
(opened by their first user; one that cannot be reached is a 503, and the next call tries again)."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Callable, Generic, TypeVar

from faceserve.backends import Backend, create
from faceserve.feedback import Feedback
from faceserve.jobs import JobQueue
from faceserve.errors import FaceserveError, RepositoryInvalid
from faceserve.models.calibration import earlier_operating_point, served_operating_point
from faceserve.models.repository import CONFIG_FILE, Repository
from faceserve.models.spec import ModelSpec
from faceserve.pipeline.embedding_cache import EmbeddingCache
from faceserve.pipeline.identity import IdentityStage
from faceserve.pipeline.pipeline import Pipeline
from faceserve.settings import Settings
from faceserve.store import Store, open_store

log = logging.getLogger(__name__)


def configs_signature(path: Path) -> tuple:
    """What changes when a model's config is rewritten (a promotion, a rollback, a new model)."""
    configs = sorted(path.glob(f"*/{CONFIG_FILE}"))
    return tuple((c.parent.name, c.stat().st_mtime_ns, c.stat().st_size) for c in configs if c.is_file())

T = TypeVar("T")


class OpenedOnce(Generic[T]):
    """A value opened in a worker thread by its first caller, once however many ask at the same time; a failed
    open raises to its callers and the next call tries again."""

    def __init__(self, open_: Callable[[], T]):
        self._open, self._value, self._lock = open_, None, asyncio.Lock()

    async def get(self) -> T:
        if self._value is None:
            async with self._lock:
                if self._value is None:
                    self._value = await asyncio.to_thread(self._open)
        return self._value

    @property
    def opened(self) -> T | None:
        """The value if it was opened (never opens it)."""
        return self._value


class Resources:
    def __init__(self, settings: Settings, backend: Backend | None = None, repository: Path | None = None):
        """`backend` None: the one `settings` names; `repository` None: `settings.repository`."""
        self.settings = settings
        path = repository or settings.repository
        self._configs_seen = configs_signature(path)
        loaded = Repository.load(path, settings.embedding_model)
        backend = backend or create(settings.backend, loaded.path, threads=settings.ort_threads,
                                    timeout_s=settings.backend_timeout_s, batch_delay_us=settings.batch_delay_us)
        self.pipeline = Pipeline(loaded, backend, max_faces=settings.limits.max_faces,
                                 embedding_cache=EmbeddingCache(settings.embedding_cache)
                                 if settings.embedding_cache > 0 else None)
        self._reload_lock = asyncio.Lock()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        # the threshold and what it stands for, decided here so that a FAR target its calibration cannot show
        # refuses the start (`CalibrationRefused`) rather than the first identity request
        self.operating_point = served_operating_point(loaded, settings.identity_far, settings.identity_threshold)
        self.earlier_operating_points = {spec.name: earlier_operating_point(spec, loaded.model_file(spec.name))
                                         for spec in loaded.earlier_embeddings}
        self._identity = OpenedOnce(lambda: IdentityStage.open(self.pipeline, self.store(), self.operating_point,
                                                               settings.enrolment_bars, settings.index_dir,
                                                               self.earlier_operating_points))
        self._feedback = OpenedOnce(lambda: Feedback(self.store(), settings.answers_kept_days,
                                                     settings.answers_group_ms / 1000))
        self._jobs = OpenedOnce(lambda: JobQueue(self.store(), settings.jobs, lease_s=settings.job_lease_s))
        log.info("model repository: %s", loaded.path)
        if loaded.missing:
            log.warning("models declared but not built (heads answered as missing): %s", ", ".join(loaded.missing))

    async def start(self) -> None:
        """The backend's models loaded (or reached), once."""
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self.pipeline.start()
                self._started = True

    @property
    def repository(self) -> Repository:
        """The repository as served now (a swap replaces it)."""
        return self.pipeline.repository

    async def reload(self) -> list[tuple[ModelSpec, ModelSpec]]:
        """Serve the repository as it is on disk now (`Pipeline.swap`); (old, new) per model swapped."""
        async with self._reload_lock:
            await self.start()
            self._configs_seen = await asyncio.to_thread(configs_signature, self.repository.path)
            try:
                repository = await asyncio.to_thread(Repository.load, self.repository.path,
                                                      self.settings.embedding_model)
            except (ValueError, OSError) as exc:  # SpecError is a ValueError
                raise RepositoryInvalid(f"the model repository cannot be served as it is now: {exc}") from None
            swapped = await self.pipeline.swap(repository)
            for old, new in swapped:
                log.info("%s: version %s serves (was %s)", new.name, new.version, old.version)
            return swapped

    async def reload_if_changed(self) -> None:
        """`reload` when a model's config changed since the last one (what the watcher calls)."""
        if await asyncio.to_thread(configs_signature, self.repository.path) == self._configs_seen:
            return
        try:
            await self.reload()
        except FaceserveError as exc:
            log.warning("model repository changed but not served: %s", exc.message)

    async def ready(self) -> bool:
        await self.start()
        states = await self.pipeline.backend.ready()
        return bool(states) and all(states.values())

    def store(self) -> Store:
        """This process's store, opened by its first user (the gallery, feedback or the job queue)."""
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.settings.store)
            return self._store

    async def identity(self) -> IdentityStage:
        """The identity stage over this process's gallery (the store's schema is migrated at its opening); without
        an embedding model a 404 before the store is touched."""
        await self.start()
        self.pipeline.require_embedding()
        return await self._identity.get()

    async def feedback(self) -> Feedback:
        return await self._feedback.get()

    async def jobs(self) -> JobQueue:
        return await self._jobs.get()

    async def close(self) -> None:
        """Everything this process opened, closed; the answers its feedback writer still holds written first."""
        if self._feedback.opened is not None:
            await asyncio.to_thread(self._feedback.opened.close)
        if self._identity.opened is not None:
            await asyncio.to_thread(self._identity.opened.close)
        await self.pipeline.backend.close()
        if self._store is not None:
            self._store.close()
