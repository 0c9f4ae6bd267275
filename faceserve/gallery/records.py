"""What the gallery hands out and takes in: plain frozen records, no database or numpy behaviour."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in the source image's pixels, as the pipeline's Box


@dataclasses.dataclass(frozen=True)
class EmbeddingModel:
    """The model whose embeddings a gallery holds: only its embeddings are searched, exported and imported."""

    name: str
    version: str
    dimension: int


@dataclasses.dataclass(frozen=True)
class NewFace:
    """A face to enrol: its embedding as the model gave it (normalised by the index, not by the caller)."""

    vector: np.ndarray
    image_sha256: str
    box: Box
    thumbnail: bytes | None = None  # stored only when the caller passes one


@dataclasses.dataclass(frozen=True)
class FaceRecord:
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


@dataclasses.dataclass(frozen=True)
class Identity:
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: str
    face_count: int


@dataclasses.dataclass(frozen=True)
class IdentityDetail(Identity):
    faces: tuple[FaceRecord, ...] = ()


@dataclasses.dataclass(frozen=True)
class IdentitySummary:
    """An identity as a list page shows it: its metadata's top-level keys only, never their values."""

    id: str
    name: str
    metadata_keys: tuple[str, ...]
    created_at: str
    face_count: int


@dataclasses.dataclass(frozen=True)
class IdentityPage:
    """One page in creation order; pass `next_after` as `after` for the next page (None: this was the last)."""

    identities: tuple[IdentitySummary, ...]
    next_after: str | None
    total: int


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


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One change of the gallery: when, by whom (a key's id, never the key; None without keys; the client's
    address), what, and which identities and faces it touched."""

    id: str
    at: str
    key_id: str | None
    address: str
    operation: str  # one of audit.OPERATIONS
    identity_ids: tuple[str, ...]
    face_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class AuditPage:
    """Oldest first; pass `next_after` as `after` for the next page (None: this was the last)."""

    entries: tuple[AuditEntry, ...]
    next_after: str | None
