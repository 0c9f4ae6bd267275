"""Service configuration from FACESERVE_* environment variables, with safe defaults."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from faceserve.http.keys import ApiKey, key_ring, legacy_key, read_key_file
from faceserve.jobs.queue import JobLimits
from faceserve.pipeline.embedding_cache import DEFAULT_ENTRIES as EMBEDDING_CACHE_ENTRIES
from faceserve.pipeline.imaging import DecodeLimits
from faceserve.pipeline.quality import EnrolmentBars

PROJECT_ROOT = Path(__file__).resolve().parent.parent


JOBS_SUBMIT_ROUTE = "/jobs/submit"
# The store's URL; a multi-instance deployment (the local cluster, the Kubernetes manifests) gives every instance
# the same one. FACESERVE_GALLERY, issue 12's name for it, is still read as an alias.
STORE_ENV = "FACESERVE_STORE"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"FACESERVE_{name}", default)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Every request limit, each configurable as FACESERVE_<NAME>; the decoder's defaults are its own
    (`DecodeLimits`), and `decode` hands them back to it."""
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DecodeLimits.max_pixels
    max_side: int = DecodeLimits.max_side
    max_faces: int = 100
    max_batch_images: int = 16
    max_batch_pixels: int = 100_000_000  # decoded pixels of all the images of one analyze_batch
    max_top_k: int = 100
    max_frames: int = DecodeLimits.max_frames
    max_concurrency: int = 64
    url_max_bytes: int = 10 * 1024 * 1024
    url_timeout_s: float = 10.0
    url_max_redirects: int = 3

    @property
    def decode(self) -> DecodeLimits:
        return DecodeLimits(max_pixels=self.max_pixels, max_side=self.max_side, max_frames=self.max_frames)


@dataclasses.dataclass(frozen=True)
class Settings:
    repository: Path
    backend: str  # "onnxruntime" or a Triton URL (grpc://host:8001, http://host:8000)
    ort_threads: int
    workers: int  # service processes; each holds its own sessions and batchers
    keepalive_requests: int  # with several workers: requests per client connection before it is closed
    backend_timeout_s: float
    limits: Limits
    data_dir: Path  # FACESERVE_DATA_DIR: where the embedded store lives (docs/store.md)
    store: str  # FACESERVE_STORE (alias FACESERVE_GALLERY): sqlite:///path or postgresql://..., see open_store
    url_fetch: bool = False  # FACESERVE_URL_FETCH=1 enables `image_url`
    url_allowlist: tuple[str, ...] = ()  # FACESERVE_URL_ALLOWLIST: CIDRs/hosts reachable despite being private
    # Access (docs/security.md): FACESERVE_API_KEYS_FILE (hashed keys with scopes) and/or FACESERVE_API_KEYS (legacy
    # plain keys, every scope); FACESERVE_ALLOWED_HOSTS, Host names answered beside the loopback ones;
    # FACESERVE_PRIVATE_DEPLOYMENT=1 lets a keyless service listen beyond loopback
    api_keys: tuple[ApiKey, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    private_deployment: bool = False
    # FACESERVE_IDENTITY_THRESHOLD: the same person at or above this cosine similarity; None: the embedding
    # model's own (its measured `score_threshold`, docs/identity.md)
    identity_threshold: float | None = None
    # FACESERVE_IDENTITY_FAR: the false-accept rate the threshold is chosen for, on the embedding model's calibration
    # (faceserve/models/calibration.py); None: 0.1 % where the calibration can show it, else the model's own threshold
    identity_far: float | None = None
    # FACESERVE_EMBEDDING_MODEL: the embedding model identity serves where the repository holds several; None: the
    # only one, or faceserve.models.repository.DEFAULT_EMBEDDING (the others search the faces enrolled under them)
    embedding_model: str | None = None
    # FACESERVE_EMBEDDING_CACHE: faces whose embedding each worker keeps by its aligned crop's hash, so that the same
    # photo identified again skips the embedding model (faceserve/pipeline/embedding_cache.py); 0: no cache
    embedding_cache: int = EMBEDDING_CACHE_ENTRIES
    # FACESERVE_ENROL_MIN_FACE_PX, _MIN_SHARPNESS, _MAX_TURN_DEGREES: enrolment refuses a face under these bars
    # (faceserve/pipeline/quality.py; their measured basis in docs/identity.md)
    enrolment_bars: EnrolmentBars = EnrolmentBars()
    # FACESERVE_DECLINE_LABELS (comma-separated labels of a whole-image classifier) and _THRESHOLD: `/annotate`
    # declines an image scoring at or above the threshold in any of them (faceserve/pipeline/policy.py)
    decline_labels: tuple[str, ...] = ()
    decline_threshold: float = 0.5
    # Asynchronous jobs (docs/jobs.md): FACESERVE_JOB_MAX_IMAGES, _MAX_BYTES, _MAX_QUEUED (unfinished jobs per API
    # key); FACESERVE_JOB_CONCURRENCY images analysed at once by each service process's worker (0: no worker);
    # FACESERVE_JOB_LEASE_S: how long an image's claim lasts, hence how soon a dead process's images are taken again
    jobs: JobLimits = JobLimits()
    job_concurrency: int = 1
    job_lease_s: float = 30.0
    # FACESERVE_ANSWERS_KEPT_DAYS: every answer is remembered so that it can be corrected (/feedback); answers
    # older than this that nobody corrected are forgotten. 0 keeps them all.
    answers_kept_days: float = 30.0
    # FACESERVE_ANSWERS_GROUP_MS: how long a remembered answer may wait for others to share its commit
    # (docs/feedback.md): fewer commits, and a kill -9 loses up to this much more. 0: a group is what queued meanwhile.
    answers_group_ms: float = 20.0
    # FACESERVE_INDEX_DIR: where the gallery's saved search indexes live (docs/identity.md); None: beside the SQLite
    # file, or for PostgreSQL a folder under the temporary directory named after the store
    index_dir: Path | None = None
    # FACESERVE_BATCH_DELAY_US: the embedded batcher's queue delay for every model; None: each config.pbtxt's own
    batch_delay_us: int | None = None
    # FACESERVE_MODELS_WATCH_S: how often each worker looks at the model configs, serving a promoted or rolled back
    # version of a face head without a restart (docs/models.md); 0: only when told (POST /models/reload)
    models_watch_s: float = 2.0

    @property
    def route_body_bytes(self) -> dict[str, int]:
        """Routes whose bodies may exceed `max_body_bytes`: a job's uploads are bounded by the job limits
        (FACESERVE_JOB_MAX_BYTES), not by one image's."""
        return {JOBS_SUBMIT_ROUTE: max(self.limits.max_body_bytes, self.jobs.max_request_bytes)}

    @classmethod
    def from_env(cls) -> "Settings":
        defaults = Limits()
        limits = Limits(**{
            f.name: type(getattr(defaults, f.name))(_env(f.name.upper(), str(getattr(defaults, f.name))))
            for f in dataclasses.fields(Limits)
        })
        data_dir = _data_dir()
        return cls(
            repository=Path(_env("MODEL_REPOSITORY", str(PROJECT_ROOT / "model_repository"))),
            backend=_env("BACKEND", "onnxruntime"),
            ort_threads=int(_env("ORT_THREADS", "1")),
            workers=int(_env("WORKERS", "2")),
            keepalive_requests=int(_env("KEEPALIVE_REQUESTS", "32")),
            backend_timeout_s=float(_env("BACKEND_TIMEOUT_S", "10")),
            limits=limits,
            url_fetch=_flag(_env("URL_FETCH", "0")),
            url_allowlist=_split(_env("URL_ALLOWLIST", "")),
            api_keys=_api_keys(),
            allowed_hosts=_split(_env("ALLOWED_HOSTS", "")),
            private_deployment=_flag(_env("PRIVATE_DEPLOYMENT", "0")),
            data_dir=data_dir,
            store=_store_url(data_dir),
            identity_threshold=float(_env("IDENTITY_THRESHOLD", "")) if _env("IDENTITY_THRESHOLD", "") else None,
            identity_far=float(_env("IDENTITY_FAR", "")) if _env("IDENTITY_FAR", "") else None,
            embedding_model=_env("EMBEDDING_MODEL", "") or None,
            embedding_cache=int(_env("EMBEDDING_CACHE", str(EMBEDDING_CACHE_ENTRIES))),
            enrolment_bars=EnrolmentBars(
                min_face_px=float(_env("ENROL_MIN_FACE_PX", str(EnrolmentBars.min_face_px))),
                min_sharpness=float(_env("ENROL_MIN_SHARPNESS", str(EnrolmentBars.min_sharpness))),
                max_turn_degrees=float(_env("ENROL_MAX_TURN_DEGREES", str(EnrolmentBars.max_turn_degrees)))),
            decline_labels=_split(_env("DECLINE_LABELS", "")),
            decline_threshold=float(_env("DECLINE_THRESHOLD", "0.5")),
            jobs=JobLimits(max_images=int(_env("JOB_MAX_IMAGES", str(JobLimits.max_images))),
                           max_bytes=int(_env("JOB_MAX_BYTES", str(JobLimits.max_bytes))),
                           max_queued_jobs=int(_env("JOB_MAX_QUEUED", str(JobLimits.max_queued_jobs)))),
            job_concurrency=int(_env("JOB_CONCURRENCY", "1")),
            job_lease_s=float(_env("JOB_LEASE_S", "30")),
            answers_kept_days=float(_env("ANSWERS_KEPT_DAYS", "30")),
            answers_group_ms=float(_env("ANSWERS_GROUP_MS", "20")),
            index_dir=Path(_env("INDEX_DIR", "")) if _env("INDEX_DIR", "") else None,
            batch_delay_us=int(_env("BATCH_DELAY_US", "")) if _env("BATCH_DELAY_US", "") else None,
            models_watch_s=float(_env("MODELS_WATCH_S", "2")),
        )


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.replace("\n", ",").split(",") if item.strip())


def _flag(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


def _api_keys() -> tuple[ApiKey, ...]:
    keys = [legacy_key(key) for key in _split(_env("API_KEYS", ""))]
    path = _env("API_KEYS_FILE", "")
    if path:
        keys += read_key_file(Path(path))
    return key_ring(keys)


def _data_dir() -> Path:
    # Outside the checkout by default (XDG): biometric data must never end up in a commit, a `git clean`
    # or a bento build context by accident; deployments mount a volume and set FACESERVE_DATA_DIR.
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(_env("DATA_DIR", str(Path(xdg) / "faceserve"))).expanduser()


def configured_store() -> str | None:
    """FACESERVE_STORE, or FACESERVE_GALLERY (issue 12's name for it); None when neither names a store."""
    store, gallery = os.environ.get(STORE_ENV, ""), _env("GALLERY", "")
    if store and gallery and store != gallery:
        raise ValueError("FACESERVE_STORE and FACESERVE_GALLERY name different stores; set only FACESERVE_STORE")
    return store or gallery or None


def _store_url(data_dir: Path) -> str:
    """The configured store, else SQLite under the data directory."""
    return configured_store() or f"sqlite:///{data_dir.resolve() / 'faceserve.db'}"
