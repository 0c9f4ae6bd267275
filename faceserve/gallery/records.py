"""What the gallery hands out and takes in, and the answers of the identity endpoints.

A record whose fields are its answer's is the response model itself (`IdentitySummary`, `IdentityPage`,
`AuditEntry`, `AuditPage`); one that holds more than it answers (a stored face's model and dimension) builds its
answer by its one `answer` method. No database or numpy behaviour here."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from faceserve.models.versions import model_ref
from faceserve.pipeline import schemas

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in the source image's pixels, as the pipeline's Box


@dataclasses.dataclass(frozen=True)
class EmbeddingModel:
    """The model whose embeddings a gallery holds: only its embeddings are searched, exported and imported."""

    name: str
    version: str
    dimension: int


@dataclasses.dataclass(frozen=True)
class ThumbnailFrame:
    """Where a thumbnail lies in its photo: the photo point at its top-left corner and its scale (thumbnail pixels
    per photo pixel, the same across and down), so that the face's box is found in it exactly. A thumbnail without
    one (enrolled before thumbnails had frames) is the face's box and nothing else."""

    x1: float
    y1: float
    scale: float

    def inside(self, box: Box) -> Box:
        """The face's box (photo pixels) in the thumbnail's pixels."""
        x1, y1, x2, y2 = box
        return ((x1 - self.x1) * self.scale, (y1 - self.y1) * self.scale, (x2 - self.x1) * self.scale,
                (y2 - self.y1) * self.scale)


def frame_values(frame: ThumbnailFrame | None) -> tuple[float | None, float | None, float | None]:
    """x1, y1 and scale, as the store's columns and an export's lines hold them (None: no frame)."""
    return (None, None, None) if frame is None else (frame.x1, frame.y1, frame.scale)


def frame_of(x1: float | None, y1: float | None, scale: float | None) -> ThumbnailFrame | None:
    return None if scale is None else ThumbnailFrame(float(x1), float(y1), float(scale))


@dataclasses.dataclass(frozen=True)
class NewFace:
    """A face to enrol: its embedding as the model gave it (normalised by the index, not by the caller)."""

    vector: np.ndarray
    image_sha256: str
    box: Box
    thumbnail: bytes | None = None  # stored only when the caller passes one
    thumbnail_frame: ThumbnailFrame | None = None  # where `thumbnail` lies in the photo; None: it is the box alone


# ---- the answers ------------------------------------------------------------------------------------------


class FaceRecord(BaseModel):
    """An enrolled face: where it was in its photo, never its vector (and never the photo)."""

    id: str
    identity_id: str
    box: schemas.Box
    image_sha256: str = Field(description="sha256 of the image bytes it was enrolled from")
    model: str = Field(description="embedding model, as name:version")
    has_thumbnail: bool
    thumbnail_box: schemas.Box | None = Field(
        default=None, description="where the box lies in the thumbnail's pixels (the thumbnail shows the face with "
        "room around it); null without a thumbnail, or for one enrolled before thumbnails had room (it is the box)")
    created_at: str


class Identity(BaseModel):
    id: str
    name: str
    metadata: dict = Field(description="the caller's JSON object, as given (at most 4096 bytes as JSON, 4 levels)")
    created_at: str
    face_count: int


class IdentityDetail(Identity):
    faces: list[FaceRecord]


class IdentitySummary(BaseModel):
    """An identity in a list page: its metadata's keys, never their values (`/identities/get` has them)."""

    id: str
    name: str
    metadata_keys: tuple[str, ...] = Field(description="the metadata object's top-level keys, sorted")
    created_at: str
    face_count: int


class IdentityPage(BaseModel):
    identities: list[IdentitySummary] = Field(description="in creation order")
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")
    total: int = Field(description="identities in the gallery")


class FacesAdded(BaseModel):
    identity_id: str
    faces: list[FaceRecord] = Field(description="one per image, in the order sent")


class Deleted(BaseModel):
    id: str
    faces_deleted: int = Field(description="face embeddings removed with it")


class GalleryImport(BaseModel):
    identities: int = Field(description="identities added")
    faces: int = Field(description="faces added")
    identities_present: int = Field(description="identities skipped: in the gallery already, identical")
    faces_present: int = Field(description="their faces")


class AuditEntry(BaseModel):
    """One change of the gallery, recorded in the change's own transaction."""

    id: str
    at: str = Field(description="when (ISO 8601, UTC)")
    key_id: str | None = Field(description="the caller's API key id (never the key); null without keys")
    address: str = Field(description="the client's address as the service saw it")
    operation: str = Field(description="create_identity, add_faces, delete_face, delete_identity or import")
    identity_ids: tuple[str, ...] = Field(description="the identities it created, changed or deleted")
    face_ids: tuple[str, ...] = Field(description="the faces it added or deleted")
    identities: int = Field(description="how many identities")
    faces: int = Field(description="how many faces")


class AuditPage(BaseModel):
    entries: tuple[AuditEntry, ...] = Field(description="oldest first")
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")


# ---- the records -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoredFace:
    """A stored face without its vector."""

    id: str
    identity_id: str
    model_name: str
    model_version: str
    dimension: int
    image_sha256: str
    box: Box
    has_thumbnail: bool
    created_at: str
    thumbnail_frame: ThumbnailFrame | None = None  # None: no thumbnail, or one of the box alone

    def answer(self) -> FaceRecord:
        return FaceRecord(id=self.id, identity_id=self.identity_id, box=_box(self.box),
                          image_sha256=self.image_sha256, model=model_ref(self.model_name, self.model_version),
                          has_thumbnail=self.has_thumbnail, created_at=self.created_at,
                          thumbnail_box=None if self.thumbnail_frame is None else _box(
                              tuple(round(v, 2) for v in self.thumbnail_frame.inside(self.box))))


def _box(box: Box) -> schemas.Box:
    x1, y1, x2, y2 = box
    return schemas.Box(x1=x1, y1=y1, x2=x2, y2=y2)


@dataclasses.dataclass(frozen=True)
class StoredIdentity:
    """A stored identity and its faces."""

    id: str
    name: str
    metadata: dict[str, Any]
    created_at: str
    face_count: int
    faces: tuple[StoredFace, ...] = ()

    def answer(self) -> IdentityDetail:
        return IdentityDetail(id=self.id, name=self.name, metadata=self.metadata, created_at=self.created_at,
                              face_count=self.face_count, faces=[face.answer() for face in self.faces])


@dataclasses.dataclass(frozen=True)
class Match:
    """An identity found by a search; `similarity` is the cosine of its closest face, in [-1, 1]."""

    identity_id: str
    name: str
    similarity: float


@dataclasses.dataclass(frozen=True)
class TransferCounts:
    """What an export wrote."""

    identities: int
    faces: int


@dataclasses.dataclass(frozen=True)
class ImportCounts:
    """What an import added, and what it skipped because the gallery already held it, identical."""

    identities: int
    faces: int
    identities_present: int = 0
    faces_present: int = 0

    def answer(self) -> GalleryImport:
        return GalleryImport(**dataclasses.asdict(self))


