"""The identity stage: the embedding head's unit vectors against the gallery and the similarity threshold.

What belongs here: which face of an image is enrolled (its only face, or the one at the caller's box),
verification of two faces, identification of every face (top-k at or above the threshold), the best match
per face for `analyze`, and their answers (`Verification`, `Identification`). What does not: storing and
searching (`faceserve.gallery`), computing embeddings (`Pipeline`, the embedding head), HTTP
(`faceserve.services.identity`, `service.py`).

Biometric data stays out of the logs: no name, metadata or vector from a request is ever logged here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from pydantic import BaseModel, Field

from faceserve.errors import InvalidRequest, StoreUnavailable
from faceserve.gallery import EmbeddingModel, Gallery, Match, NewFace, ThumbnailFrame, validation
from faceserve.models.calibration import BY_MODEL, BY_SETTING, OperatingPoint, earlier_operating_point, unknown_point
from faceserve.models.crops import square_box
from faceserve.models.heads import EmbeddingHead
from faceserve.models.landmarks import PRESENCE_THRESHOLD
from faceserve.pipeline import imaging
from faceserve.pipeline.pipeline import FoundFace, Pipeline, largest
from faceserve.pipeline.quality import EnrolmentBars
from faceserve.models.versions import model_ref
from faceserve.pipeline.schemas import Analysis, Box, IdentityMatch
from faceserve.store import Store

log = logging.getLogger(__name__)

# A thumbnail shows a square of THUMBNAIL_SPAN times the face box's longer side around the box's centre (clipped to
# the photo): room for every crop the repository's recipes cut around a face (FaceRes' square box widened by 0.1 a
# side: 1.2; the face mesh's 1.5; dlib's chip, aligned at margin 0.25: at most 1.3 on the fixtures, so a face turned
# 45 degrees still fits), so that re-embedding (faceserve/services/reembed.py) crops from it what the pipeline crops
# from the photo. Downscaled to the gallery's bound on a side: re-embedded from 256 pixels, the fixtures' faces come
# out at cosine 0.989 on average to their photos' embeddings, from 192 at 0.981 (docs/identity.md).
THUMBNAIL_SPAN = 2.0
THUMBNAIL_SIDE = validation.MAX_THUMBNAIL_SIDE


class Verification(BaseModel):
    same_person: bool = Field(description="similarity >= threshold")
    similarity: float = Field(description="cosine similarity of the two faces' embeddings, -1..1")
    threshold: float
    operating_point: OperatingPoint = Field(description="the threshold and the false accept and reject rates it "
                                                        "stands for on the model's calibration set")
    faces: list[Box] = Field(description="the face compared in each image")
    model: str = Field(description="embedding model, as name:version")


class IdentifiedFace(BaseModel):
    box: Box
    score: float = Field(description="detector confidence, 0..1")
    identity: IdentityMatch | None = Field(description="the best match, or null: nobody known (below the threshold)")
    matches: list[IdentityMatch] = Field(description="up to top_k identities at or above the threshold, best first")


class Identification(BaseModel):
    width: int
    height: int
    faces: list[IdentifiedFace]
    threshold: float
    operating_point: OperatingPoint = Field(description="the threshold and the false accept and reject rates it "
                                                        "stands for on the model's calibration set")
    model: str = Field(description="embedding model, as name:version")


@dataclasses.dataclass
class EarlierGallery:
    """The faces enrolled under an embedding model that no longer serves (the repository holds it beside the serving
    one): each identity holding no face of the serving model is searched with this model, at its own operating
    point, until `python -m faceserve gallery reembed` embeds its faces again."""

    head: EmbeddingHead
    gallery: Gallery
    operating_point: OperatingPoint
    _pending: tuple[int | None, frozenset[str]] | None = None  # (the gallery's change counter, its identities)

    @property
    def model(self) -> str:
        return model_ref(self.head.spec.name, self.head.spec.version)

    def pending(self, serving: Gallery) -> frozenset[str]:
        """The identities only this model can find, as of the last change of the gallery the serving model's index
        followed (its counter counts every model's changes)."""
        version = serving.index.version
        if self._pending is None or self._pending[0] != version or version is None:
            try:
                self._pending = (version, frozenset(self.gallery.identities_not_under(serving.model)))
            except StoreUnavailable:  # the galleries in memory keep answering while the store is away
                return self._pending[1] if self._pending else frozenset()
        return self._pending[1]


class IdentityStage:
    def __init__(self, pipeline: Pipeline, gallery: Gallery, threshold: float | OperatingPoint,
                 bars: EnrolmentBars = EnrolmentBars(), earlier: Sequence[EarlierGallery] = ()):
        """`threshold`: the operating point (`faceserve.models.calibration.operating_point`), or a bare cosine
        whose rates are unknown; `earlier`: the galleries of the repository's other embedding models."""
        self.operating_point = (threshold if isinstance(threshold, OperatingPoint)
                                else unknown_point(threshold, BY_SETTING, None))
        self.pipeline, self.gallery, self.bars, self.earlier = pipeline, gallery, bars, list(earlier)
        spec = pipeline.require_embedding().spec
        self.model = model_ref(spec.name, spec.version)

    def close(self) -> None:
        """Stop every gallery's index build (`Gallery.close`)."""
        for gallery in [self.gallery] + [e.gallery for e in self.earlier]:
            gallery.close()

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    @threshold.setter
    def threshold(self, cosine: float) -> None:
        """A bare cosine: what it stands for is unknown."""
        self.operating_point = unknown_point(cosine, BY_SETTING, None)

    @classmethod
    def open(cls, pipeline: Pipeline, store: Store, threshold: float | OperatingPoint | None = None,
             bars: EnrolmentBars = EnrolmentBars(), index_dir: Path | None = None,
             earlier_points: dict[str, OperatingPoint] | None = None) -> "IdentityStage":
        """The stage over the gallery in `store` for the pipeline's embedding head (slow: the gallery's index is
        loaded); `threshold` None is the head's own, of unknown rates; `index_dir` None: the store's default folder;
        `earlier_points` None: each earlier embedding model's operating point worked out here."""
        head = pipeline.require_embedding()
        model = EmbeddingModel(head.spec.name, head.spec.version, head.dimension)
        gallery = Gallery(store, model, index_dir=index_dir)
        log.info("gallery: %s faces of %s", type(store).__name__, model_ref(model.name, model.version))
        if threshold is None:
            threshold = unknown_point(head.spec.score_threshold, BY_MODEL, None)
        earlier = []
        for name, other in pipeline.earlier_embeddings.items():
            spec = other.spec
            point = (earlier_points[name] if earlier_points is not None
                     else earlier_operating_point(spec, pipeline.repository.model_file(name)))
            earlier.append(EarlierGallery(other, Gallery(store, EmbeddingModel(spec.name, spec.version, other.dimension),
                                                         index_dir=index_dir), point))
        return cls(pipeline, gallery, threshold, bars, earlier)

    async def analyze(self, image: np.ndarray, detector: str | None = None) -> Analysis:
        """`Pipeline.analyze` with each face's best match in the gallery (`identity`, None for nobody known)."""
        return (await self.analyze_and_embed(image, detector))[0]

    async def analyze_and_embed(self, image: np.ndarray, detector: str | None = None) -> tuple[Analysis, np.ndarray]:
        """`analyze`, and the unit embedding each face was searched with (one row per face, the answer's order)."""
        earlier = await self._searching()
        analysis, (vectors, *others) = await self.pipeline.analyze_and_embed_by(
            image, detector, [self.pipeline.require_embedding()] + [e.head for e in earlier])
        found = await self._with_earlier(await self.matches(vectors), earlier, others, 1)
        for face, matches in zip(analysis.faces, found):
            face.identity = matches[0] if matches else None
        analysis.identity_operating_point = self.operating_point
        return analysis, vectors

    async def enrolment(self, image: np.ndarray, image_sha256: str, box: Sequence[float] | None, label: str,
                        thumbnail: bool = False) -> NewFace:
        """The face to enrol from one image: its only face, or the one at the caller's `box`, if its quality
        passes the bars; `label` names the image in errors ("image 2")."""
        if box is not None:
            face = await self._at_box(image, box, label)
        else:
            faces = await self.pipeline.locate(image)
            if not faces:
                raise InvalidRequest(f"{label}: no face found; send a photo of the face, or give its box",
                                     code="no_face")
            if len(faces) > 1:
                raise InvalidRequest(f"{label}: {len(faces)} faces found; send a photo of one face, or give the "
                                     "box of the face to enrol", code="several_faces")
            (face,) = faces
        failures = self.bars.failures(face.quality)
        if failures:
            raise InvalidRequest(f"{label}: the face is {' and '.join(failures)}; send a larger, sharper photo of "
                                 "the face looking at the camera", code="low_quality_face")
        (vector,) = await self.pipeline.embed(image, [face])
        small, frame = await asyncio.to_thread(_thumbnail, image, face.box) if thumbnail else (None, None)
        return NewFace(vector, image_sha256, face.box, small, frame)

    async def verify(self, first: np.ndarray, second: np.ndarray) -> Verification:
        """Whether the most prominent (largest) face of each image is the same person."""
        faces = [_largest(await self.pipeline.locate(image), f"image {n}") for n, image in enumerate((first, second), 1)]
        vectors = [(await self.pipeline.embed(image, [face]))[0] for image, face in zip((first, second), faces)]
        for number, vector in enumerate(vectors, 1):
            if not np.all(np.isfinite(vector)):  # a NaN similarity would be no answer at all, and never a match
                raise InvalidRequest(f"image {number}: the embedding model gave no usable vector for its face",
                                     code="no_embedding")
        similarity = float(np.clip(vectors[0] @ vectors[1], -1.0, 1.0))
        return Verification(same_person=similarity >= self.threshold, similarity=round(similarity, 4),
                            threshold=self.threshold, operating_point=self.operating_point,
                            faces=[_box(face.box) for face in faces], model=self.model)

    async def identify(self, image: np.ndarray, detector: str | None, top_k: int) -> Identification:
        faces = await self.pipeline.locate(image, detector)
        earlier = await self._searching()
        vectors = await asyncio.gather(self.pipeline.embed(image, faces),
                                       *(self.pipeline.embed(image, faces, e.head) for e in earlier))
        found = await self._with_earlier(await self.matches(vectors[0], top_k), earlier, vectors[1:], top_k)
        return Identification(
            width=image.shape[1], height=image.shape[0], threshold=self.threshold,
            operating_point=self.operating_point, model=self.model,
            faces=[IdentifiedFace(box=_box(face.box), score=face.score, identity=matches[0] if matches else None,
                                  matches=matches) for face, matches in zip(faces, found)])

    async def matches(self, vectors: np.ndarray, top_k: int = 1) -> list[list[IdentityMatch]]:
        """For each unit vector (row), up to `top_k` identities at or above the threshold, best first."""
        return await _search(self.gallery, vectors, top_k, self.threshold)

    async def _searching(self) -> list[EarlierGallery]:
        """The earlier models that still have identities to find: only they are run."""
        pending = await asyncio.gather(*(asyncio.to_thread(e.pending, self.gallery) for e in self.earlier))
        return [e for e, identities in zip(self.earlier, pending) if identities]

    async def _with_earlier(self, found: list[list[IdentityMatch]], earlier: list[EarlierGallery],
                            vectors: Sequence[np.ndarray], top_k: int) -> list[list[IdentityMatch]]:
        """`found` (the serving model's matches per face) and, after them, each earlier model's matches among the
        identities not yet re-embedded (its `vectors`: the same faces by that model), up to `top_k` a face.
        Similarities of two models are on two scales, so they are not merged by value: a match says its model."""
        for model, by_model in zip(earlier, vectors):
            more = await _search(model.gallery, by_model, top_k, model.operating_point.threshold,
                                 await asyncio.to_thread(model.pending, self.gallery))
            found = [(mine + [match.model_copy(update={"model": model.model}) for match in theirs])[:top_k]
                     for mine, theirs in zip(found, more)]
        return found

    async def _at_box(self, image: np.ndarray, box: Sequence[float], label: str) -> FoundFace:
        x1, y1, x2, y2 = validation.box(box)
        height, width = image.shape[:2]
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise InvalidRequest(f"{label}: the box lies outside the {width}x{height} image", code="box_outside_image")
        (face,) = await self.pipeline.at_boxes(image, [(x1, y1, x2, y2)])
        if face.score < PRESENCE_THRESHOLD:
            raise InvalidRequest(f"{label}: the landmark model sees no face in the given box", code="no_face")
        return face


async def _search(gallery: Gallery, vectors: np.ndarray, top_k: int, threshold: float,
                  among: frozenset[str] | None = None) -> list[list[IdentityMatch]]:
    """For each unit vector (row), up to `top_k` identities at or above `threshold` (`among` these only, if given),
    best first."""
    answers: list[list[IdentityMatch]] = [[] for _ in range(len(vectors))]
    # A zero or non-finite vector (no unit vector) matches nobody.
    searchable = [i for i, vector in enumerate(vectors) if np.any(vector) and np.all(np.isfinite(vector))]
    if searchable:
        # `among`: a search of top_k may be filled by identities outside it, so every candidate it can return
        found = await asyncio.to_thread(gallery.search, vectors[searchable], top_k if among is None else top_k + 32)
        for i, candidates in zip(searchable, found):
            answers[i] = [_match(m) for m in candidates if math.isfinite(m.similarity) and m.similarity >= threshold
                          and (among is None or m.identity_id in among)][:top_k]
    return answers


def _largest(faces: list[FoundFace], label: str) -> FoundFace:
    if not faces:
        raise InvalidRequest(f"{label}: no face found", code="no_face")
    return largest(faces)


def _box(box: Sequence[float]) -> Box:
    x1, y1, x2, y2 = box
    return Box(x1=x1, y1=y1, x2=x2, y2=y2)


def _match(match: Match) -> IdentityMatch:
    return IdentityMatch(id=match.identity_id, name=match.name, similarity=round(match.similarity, 4))


def _thumbnail(image: np.ndarray, box: Sequence[float]) -> tuple[bytes, ThumbnailFrame]:
    """A small JPEG of the face with room around it (see THUMBNAIL_SPAN), stored only when the caller asks, and
    where it lies in the photo."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = square_box(box)
    half, centre_x, centre_y = (x2 - x1) * THUMBNAIL_SPAN / 2, (x1 + x2) / 2, (y1 + y2) / 2
    # whole pixels, clipped to the photo (a box reaching past its edge keeps only what the photo has)
    left, top = max(0, math.floor(centre_x - half)), max(0, math.floor(centre_y - half))
    right = min(width, max(left + 1, math.ceil(centre_x + half)))
    bottom = min(height, max(top + 1, math.ceil(centre_y + half)))
    region = image[top:bottom, left:right]
    scale = min(1.0, THUMBNAIL_SIDE / max(region.shape[:2]))
    if scale < 1:  # by `scale` exactly across and down (OpenCV maps with fx, fy when dsize is left to it)
        region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return imaging.encode(region, "jpeg", quality=validation.THUMBNAIL_QUALITY), ThumbnailFrame(left, top, scale)
