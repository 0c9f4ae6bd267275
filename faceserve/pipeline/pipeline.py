"""The orchestrator: detect once, place each face (landmarks, pose), crop per head recipe, one batched
call per head."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from typing import Sequence

import numpy as np

from faceserve.backends import Backend
from faceserve.errors import (InvalidRequest, LimitExceeded, NotFound, RepositoryInvalid, RestartRequired,
                              VersionNotLoaded)
from faceserve.models import detectors, heads
from faceserve.models.classifier import Classifier
from faceserve.models.detectors import Detection, Detector
from faceserve.models.heads import EmbeddingHead, Head
from faceserve.models.landmarks import PRESENCE_THRESHOLD, LandmarkModel, Placement
from faceserve.models.repository import Repository, is_head
from faceserve.models.rollout import Comparison, Trial, candidates, same_input
from faceserve.models.spec import ModelSpec
from faceserve.models.versions import model_ref
from faceserve.pipeline import quality, verification
from faceserve.pipeline.embedding_cache import EmbeddingCache
from faceserve.pipeline.schemas import HEAD_FIELDS, Analysis, Box, Classification, Face, Label, Pose, Quality

log = logging.getLogger(__name__)

EMBEDDING_ANSWER = "_embedding"  # where `_heads` puts the embedding head's vectors: no response field has this name


@dataclasses.dataclass(frozen=True)
class FoundFace:
    """A face located in an image: its box, the detector's score (or, at a box the caller gave, the landmark
    model's presence), where its features are and how useful it is."""

    box: tuple[float, float, float, float]
    score: float
    placement: Placement | None
    quality: Quality


def largest(faces: Sequence[FoundFace]) -> FoundFace:
    """The face with the largest box: the one a photo of one person is taken to show."""
    return max(faces, key=lambda face: (face.box[2] - face.box[0]) * (face.box[3] - face.box[1]))


class Pipeline:
    def __init__(self, repository: Repository, backend: Backend, max_faces: int = 100,
                 embedding_cache: EmbeddingCache | None = None):
        """`embedding_cache` None: every face is embedded by the model."""
        self.repository = repository
        self.backend = backend
        self.max_faces = max_faces
        self.embedding_cache = embedding_cache
        try:
            trials = _trials(repository)
        except RepositoryInvalid as exc:  # a trial is an experiment: the serving versions serve without it
            log.warning("no candidate runs: %s", exc.message)
            trials = {}
        self._head_set = HeadSet(_ordered_heads(repository), trials)
        # the identity stage's: its vectors are consumed there, never answered as a field
        self.embedding: EmbeddingHead | None = (heads.head_for(repository.embedding)
                                                if repository.embedding else None)
        # the other embedding models: the identity stage searches the faces enrolled under each with it
        self.earlier_embeddings: dict[str, EmbeddingHead] = {
            spec.name: heads.head_for(spec) for spec in repository.earlier_embeddings}
        self._detectors = detectors.build(repository.detectors, backend)
        self.default_detector = detectors.default(self._detectors)
        self.default_detector_reason = detectors.default_reason(self._detectors)
        self._landmarks = LandmarkModel(repository.landmarks) if repository.landmarks else None
        self._classifiers = {name: Classifier(spec, backend) for name, spec in repository.classifiers.items()}

    async def start(self) -> None:
        await self.backend.start(self.repository.specs)
        self._head_set = await self._with_candidates(self._head_set, {})

    async def _with_candidates(self, head_set: "HeadSet", loaded: dict[str, ModelSpec]) -> "HeadSet":
        """`head_set` with its candidates loaded beside `loaded`, or without them where the backend holds no second
        version (the embedded backend without hot swap, a Triton that was not told to load the candidate): a trial
        is an experiment, the serving versions serve without it."""
        new = {key: spec for key, spec in head_set.candidate_specs().items() if key not in loaded}
        if not new:
            return head_set
        try:
            await self.backend.load(new)
        except (RestartRequired, VersionNotLoaded) as exc:
            log.warning("no candidate runs beside the serving versions: %s", exc.message)
            return HeadSet(head_set.heads, {})
        return head_set

    @property
    def heads(self) -> list[Head]:
        """The face heads serving now (a request keeps the ones it started with: `HeadSet`)."""
        return self._head_set.heads

    @property
    def trials(self) -> dict[str, "Candidate"]:
        """The candidates running now, by the field they answer."""
        return self._head_set.trials

    @contextlib.contextmanager
    def one_version(self, request_key: str | None = None):
        """Every analysis inside (those of one request's several images) runs the same head versions; with a
        `request_key` (the request's id), the candidates of the trials too, a canary answering by its draw."""
        head_set = self._head_set
        token, key_token = _PINNED.set(head_set), _REQUEST_KEY.set(request_key)
        try:
            with head_set.using():
                yield
        finally:
            _PINNED.reset(token)
            _REQUEST_KEY.reset(key_token)

    async def swap(self, repository: Repository) -> list[tuple[ModelSpec, ModelSpec]]:
        """Serve `repository`'s versions of the face heads without a restart: the new versions are loaded beside
        the old ones, the head set is replaced between two requests (each request runs the heads it started
        with), and the old versions are let go once no request uses them. Returns (old, new) per head swapped.
        Any other difference (a model added or removed, a detector, landmark, classifier or embedding model
        changed) is refused with nothing changed: those are served after a restart."""
        old, new = self.repository.specs, repository.specs
        differing = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
        swappable = [name for name in differing if name in old and name in new and is_head(old[name])
                     and new[name].task == old[name].task]
        others = [name for name in differing if name not in swappable]
        if others:
            raise RestartRequired(f"the repository changed in {', '.join(others)}, which only a restart serves "
                                  f"(a new version swaps in place only for face heads: "
                                  f"{', '.join(sorted(repository.heads)) or 'none'})")
        head_set = HeadSet(_ordered_heads(repository), _trials(repository))
        previous = self._head_set
        if not swappable and head_set.trial_specs() == previous.trial_specs():
            return []
        before = previous.loaded()
        new_versions = {key: spec for key, spec in head_set.serving_specs().items() if key not in before}
        if new_versions:
            await self.backend.load(new_versions)
        head_set = await self._with_candidates(head_set, before)
        after = head_set.loaded()
        self._head_set, self.repository = head_set, repository  # no await between
        if head_set.trial_specs() != previous.trial_specs():
            log.info("candidates: %s", "; ".join(f"{c.head.spec.name}:{c.head.spec.version} {c.trial.mode}"
                                                  for c in head_set.trials.values()) or "none")
        await previous.drained()
        await self.backend.unload([spec for key, spec in before.items() if key not in after])
        return [(old[name], new[name]) for name in swappable]

    @property
    def detectors(self) -> list[str]:
        return list(self._detectors)

    def detector(self, name: str | None) -> Detector:
        """The detector called `name`; None: the default one."""
        name = name or self.default_detector
        if name not in self._detectors:
            raise InvalidRequest(f"unknown detector {name!r}; available: {', '.join(self._detectors)}",
                                 code="unknown_detector")
        return self._detectors[name]

    async def detect(self, image: np.ndarray, detector: str | None = None) -> list[Detection]:
        return await self.detect_with(self.detector(detector), image)

    async def detect_with(self, chosen: Detector, image: np.ndarray) -> list[Detection]:
        """The detector's faces, best first: its sure boxes, and those of its unsure ones the face mesh confirms
        (`verification`; at most `max_faces` of them, the best, are shown to the mesh). Any detector object: the
        benchmark measures variants that are not served."""
        found = await chosen.detect(image)
        unsure = [d for d in found if chosen.unsure(d)][:self.max_faces]
        if not unsure:
            return found
        sure = [d for d in found if not chosen.unsure(d)]
        kept = verification.confirmed(sure, unsure, await self.place(image, [d.box for d in unsure],
                                                                     [d.roll for d in unsure]))
        return sorted(sure + kept, key=lambda d: -d.score)

    async def analyze(self, image: np.ndarray, detector: str | None = None) -> Analysis:
        return (await self._analyze(image, detector))[0]

    async def analyze_and_embed(self, image: np.ndarray, detector: str | None = None) -> tuple[Analysis, np.ndarray]:
        """`analyze`, and each face's unit embedding (one row per face, in the answer's order) from the same
        round of head calls."""
        analysis, (vectors,) = await self.analyze_and_embed_by(image, detector, [self.require_embedding()])
        return analysis, vectors

    async def analyze_and_embed_by(self, image: np.ndarray, detector: str | None,
                                   embeddings: Sequence[EmbeddingHead]) -> tuple[Analysis, list[np.ndarray]]:
        """`analyze_and_embed` by each of these embedding heads (the serving one or earlier ones), in one round."""
        return await self._analyze(image, detector, embeddings)

    async def _analyze(self, image: np.ndarray, detector: str | None,
                       embeddings: Sequence[EmbeddingHead] = ()) -> tuple[Analysis, list[np.ndarray]]:
        chosen = self.detector(detector)
        started = time.perf_counter()
        detections = await self.detect_with(chosen, image)
        detected = time.perf_counter()
        faces = await self._placed(image, detections)
        placed = time.perf_counter()
        head_set, request_key = _PINNED.get() or self._head_set, _REQUEST_KEY.get()
        with head_set.using() as serving:
            answers, comparisons, answering = await self._heads(
                image, faces, serving + list(embeddings), head_set.trials if request_key is not None else {},
                request_key)
        vectors = [answers.pop(self._answer_key(head)) for head in embeddings]
        finished = time.perf_counter()
        used = (answering + ([chosen.spec] if chosen.spec is not None else [])
                + ([self._landmarks.spec] if self._landmarks else []))
        analysis = Analysis(
            width=image.shape[1], height=image.shape[0], detector=chosen.name,
            faces=[Face(box=Box(x1=face.box[0], y1=face.box[1], x2=face.box[2], y2=face.box[3]), score=face.score,
                        quality=face.quality, **_placement_fields(face.placement),
                        **{field: values[i] for field, values in answers.items()})
                   for i, face in enumerate(faces)],
            models={spec.task: model_ref(spec.name, spec.version) for spec in used},
            missing_heads=[field for field in HEAD_FIELDS if field not in answers],
            timings_ms={"detect": round((detected - started) * 1e3, 3),
                        "landmarks": round((placed - detected) * 1e3, 3),
                        "heads": round((finished - placed) * 1e3, 3)},
        )
        analysis.comparisons = comparisons
        return analysis, vectors

    async def locate(self, image: np.ndarray, detector: str | None = None) -> list[FoundFace]:
        """The faces the detector finds and the landmark model confirms, placed."""
        return await self._placed(image, await self.detect(image, detector))

    async def at_boxes(self, image: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> list[FoundFace]:
        """Faces at boxes the caller gives, placed; each one's score is the landmark model's presence (1.0
        without a landmark model), for the caller to judge."""
        boxes = [tuple(map(float, box)) for box in boxes]
        placements = await self.place(image, boxes)
        return await self._found(image, boxes, [p.presence if p else 1.0 for p in placements], placements)

    async def embed(self, image: np.ndarray, faces: list[FoundFace], head: EmbeddingHead | None = None) -> np.ndarray:
        """The (faces, dimension) unit embeddings of these faces, by `head` (None: the serving embedding model)."""
        embedding = head or self.require_embedding()
        if not faces:
            return np.zeros((0, embedding.dimension), np.float32)
        return (await self._heads(image, faces, [embedding]))[0][self._answer_key(embedding)]

    def _answer_key(self, head: Head) -> str:
        """Where `_heads` puts a head's answers: its field; the embedding heads' vectors under names no field has."""
        if not isinstance(head, EmbeddingHead):
            return head.field
        return EMBEDDING_ANSWER if head.spec.name == self.repository.serving_embedding else \
            f"{EMBEDDING_ANSWER}:{head.spec.name}"

    def require_embedding(self) -> EmbeddingHead:
        if self.embedding is None:
            raise NotFound("the model repository has no embedding model (task `embedding`); build one with "
                           "`python -m convert build --only embedding_dlib`", code="no_embedding_model")
        return self.embedding

    async def _placed(self, image: np.ndarray, detections: list[Detection]) -> list[FoundFace]:
        if len(detections) > self.max_faces:
            raise LimitExceeded(f"{len(detections)} faces found; the limit is {self.max_faces} faces per image",
                                code="too_many_faces")
        placements = await self.place(image, [d.box for d in detections], [d.roll for d in detections])
        # a box the landmark model does not see a face in is the detector's mistake
        kept = [(d, p) for d, p in zip(detections, placements) if p is None or p.presence >= PRESENCE_THRESHOLD]
        return await self._found(image, [d.box for d, _ in kept], [d.score for d, _ in kept], [p for _, p in kept])

    @staticmethod
    async def _found(image: np.ndarray, boxes: list, scores: list[float],
                     placements: list[Placement | None]) -> list[FoundFace]:
        if not boxes:
            return []
        qualities = await asyncio.to_thread(quality.measure_all, image, boxes, placements)
        return [FoundFace(*face) for face in zip(boxes, scores, placements, qualities)]

    async def place(self, image: np.ndarray, boxes: list,
                    rolls: list[float | None] | None = None) -> list[Placement | None]:
        """Each face's landmarks and pose (None for every face when the repository has no landmark model); `rolls`:
        the detector's word on each face's roll, where it has one (`Detection.roll`)."""
        if self._landmarks is None or not boxes:
            return [None] * len(boxes)
        spec = self._landmarks.spec
        return await self._landmarks.locate(image, boxes, lambda batch: self.backend.infer(spec, batch), rolls)

    async def _heads(self, image: np.ndarray, faces: list[FoundFace], run: list[Head],
                     trials: dict[str, "Candidate"] | None = None,
                     request_key: str | None = None) -> tuple[dict, list[Comparison], list[ModelSpec]]:
        """Each head's answers per face, keyed by its field (the embedding head's: `EMBEDDING_ANSWER`), what each
        trial compared, and the specs that answered. A field on trial runs its candidate beside the serving
        version (on the same batch where their recipes agree), in the same round; a canary's candidate answers
        where `request_key` draws it. Every crop is cut in one worker-thread hop, then all models run at once
        (the embedding head on the faces its cache does not hold)."""
        keys = [self._answer_key(head) for head in run]
        trials = {key: trials[key] for key in keys if trials and key in trials}
        answering, beside = list(run), []  # beside: (index in run, the other version of that field)
        for i, key in enumerate(keys):
            if key in trials:
                candidate = trials[key]
                if candidate.trial.answers(request_key):
                    answering[i] = candidate.head
                    beside.append((i, run[i]))
                else:
                    beside.append((i, candidate.head))
        if not faces:  # nothing to compare; the answer still names the version its draw chose
            return {key: [] for key in keys}, [], [head.spec for head in answering]
        boxes, landmarks = [f.box for f in faces], [f.placement and f.placement.landmarks for f in faces]
        everyone = answering + [other for _, other in beside]
        cache = self.embedding_cache

        def cut() -> list[tuple[np.ndarray, list[bytes] | None]]:
            """Each head's crops, and for the embedding head their digests (the cache's keys)."""
            batches = [head.batch(image, boxes, landmarks) for head in answering]
            batches += [batches[i] if same_input(other.spec, answering[i].spec)
                        else other.batch(image, boxes, landmarks) for i, other in beside]
            return [(batch, cache.keys(head, batch) if cache is not None and isinstance(head, EmbeddingHead)
                     else None) for head, batch in zip(everyone, batches)]

        async def answers(head: Head, batch: np.ndarray, digests: list[bytes] | None) -> tuple[object, float]:
            started = time.perf_counter()
            if digests is not None:
                values = await cache.embed(head, batch, digests, lambda rows: self.backend.infer(head.spec, rows))
            else:
                values = head.decode(await self.backend.infer(head.spec, batch))
            return values, (time.perf_counter() - started) * 1e3  # its batcher's wait included

        batches = await asyncio.to_thread(cut)
        timed = await asyncio.gather(*(answers(head, *batch) for head, batch in zip(everyone, batches)))
        decoded = [values for values, _ in timed]
        comparisons = []
        for j, (i, other) in enumerate(beside):
            by_candidate = other is run[i]
            serving, candidate = (len(run) + j, i) if by_candidate else (i, len(run) + j)
            comparisons.append(Comparison(
                field=keys[i], mode=trials[keys[i]].trial.mode, serving=everyone[serving].spec,
                candidate=everyone[candidate].spec, answered_by_candidate=by_candidate,
                serving_values=decoded[serving], candidate_values=decoded[candidate],
                serving_ms=timed[serving][1], candidate_ms=timed[candidate][1]))
        return dict(zip(keys, decoded)), comparisons, [head.spec for head in answering]

    @staticmethod
    def check_top_k(top_k: int, limit: int) -> None:
        if not 1 <= top_k <= limit:
            raise LimitExceeded(f"top_k must be between 1 and {limit}, got {top_k}", code="top_k_out_of_range")

    async def classify(self, image: np.ndarray, model: str | None, top_k: int) -> Classification:
        available = self._classifiers
        if not available:
            raise NotFound("the model repository has no whole-image classifier; it serves "
                           f"{', '.join(sorted(self.repository.specs)) or 'no models'}",
                           code="no_classifier")
        if model is None:
            model = sorted(available)[0]
        if model not in available:
            raise NotFound(f"no whole-image classifier named {model!r}; available: {', '.join(sorted(available))}",
                           code="unknown_model")
        labels = await available[model].classify(image, top_k)
        return Classification(model=model, width=image.shape[1], height=image.shape[0],
                              top_k=[Label(**item) for item in labels])


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A field's trial and the candidate version's head."""

    trial: Trial
    head: Head


class HeadSet:
    """The face heads of one moment with their candidates, and how many requests are running them: a swap waits
    for the set it replaced to be idle before its versions are let go."""

    def __init__(self, heads: list[Head], trials: dict[str, Candidate]):
        self.heads = heads
        self.trials = trials
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def using(self):
        self._running += 1
        self._idle.clear()
        try:
            yield self.heads
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()

    def candidate_specs(self) -> dict[str, ModelSpec]:
        return {model_ref(c.head.spec.name, c.head.spec.version): c.head.spec for c in self.trials.values()}

    def trial_specs(self) -> dict[str, tuple[Trial, ModelSpec]]:
        return {field: (c.trial, c.head.spec) for field, c in self.trials.items()}

    def serving_specs(self) -> dict[str, ModelSpec]:
        return {model_ref(h.spec.name, h.spec.version): h.spec for h in self.heads}

    def loaded(self) -> dict[str, ModelSpec]:
        """Every version this set runs, serving or candidate, by `name:version`."""
        return {**self.serving_specs(), **self.candidate_specs()}


# the head set a request pinned (`Pipeline.one_version`), and its id that runs the trials; tasks it starts inherit them
_PINNED: contextvars.ContextVar[HeadSet | None] = contextvars.ContextVar("pinned_heads", default=None)
_REQUEST_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_key", default=None)


def _trials(repository: Repository) -> dict[str, Candidate]:
    """The candidates the repository's configs name, by field; a trial that cannot run is an invalid repository."""
    try:
        found = candidates(repository)
    except ValueError as exc:  # VersionError, SpecError
        raise RepositoryInvalid(f"the model repository cannot be served as it is now: {exc}") from None
    return {field: Candidate(trial, heads.head_for(spec)) for field, (trial, spec) in found.items()}


def _ordered_heads(repository: Repository) -> list[Head]:
    """The repository's face heads in the response's field order: the schema's typed fields first, then any other
    by name."""
    return [heads.head_for(spec) for _, spec in sorted(
        repository.heads.items(),
        key=lambda item: (HEAD_FIELDS.index(item[0]) if item[0] in HEAD_FIELDS else len(HEAD_FIELDS), item[0]))]


def _placement_fields(placement: Placement | None) -> dict:
    if placement is None:
        return {}
    return {"landmarks": [(round(float(x), 2), round(float(y), 2)) for x, y in placement.landmarks],
            "pose": Pose(yaw=round(placement.yaw, 2), pitch=round(placement.pitch, 2), roll=round(placement.roll, 2))}
