"""Response models: the JSON contract of every endpoint (and of the CLI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Box(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class LabelScores(BaseModel):
    label: str
    score: float = Field(description="probability of `label`")
    scores: dict[str, float] = Field(description="probability of every label")


class Pose(BaseModel):
    yaw: float = Field(description="degrees; positive when the face turns towards the image's left")
    pitch: float = Field(description="degrees; positive when the face tilts up")
    roll: float = Field(description="degrees; positive when the eye line slopes down towards the image's right")


class IdentityMatch(BaseModel):
    id: str = Field(description="the identity's id")
    name: str
    similarity: float = Field(description="cosine similarity of the face to the identity's closest enrolled face, "
                                          "-1..1")


class Face(BaseModel):
    """One face: its box and score, where its features are, then one field per head of the repository
    (the typed ones below, and any other head's answer under its task's name)."""

    model_config = ConfigDict(extra="allow")

    box: Box
    score: float = Field(description="detector confidence, 0..1")
    landmarks: list[tuple[float, float]] | None = Field(
        None, description="five points [x, y] in image pixels: the eye on the image's left, the other eye, "
                          "the nose tip, the mouth corner on the image's left, the other mouth corner")
    pose: Pose | None = Field(None, description="head pose from the face mesh")
    emotion: LabelScores | None = None
    gender: LabelScores | None = None
    age: float | None = Field(None, description="estimated age in years")
    identity: IdentityMatch | None = Field(
        None, description="with `identify`: the closest enrolled identity at or above the similarity threshold, "
                          "null when the face is nobody known (or `identify` was not asked)")


# Where a face is and what its features' positions say, filled before the heads run.
PLACEMENT_FIELDS: tuple[str, ...] = ("box", "score", "landmarks", "pose")
# Filled after the heads, from what they answered (the identity stage, from the embedding).
STAGE_FIELDS: tuple[str, ...] = ("identity",)
# The per-face fields the schema types, in response order; the heads present fill them.
HEAD_FIELDS: tuple[str, ...] = tuple(name for name in Face.model_fields
                                     if name not in PLACEMENT_FIELDS + STAGE_FIELDS)


REQUEST_ID = "names this answer in `/feedback`; null when the store could not remember it"


class Analysis(BaseModel):
    request_id: str | None = Field(None, description=REQUEST_ID)
    width: int
    height: int
    detector: str
    faces: list[Face]
    models: dict[str, str] = Field(description="model that answered each task, as name:version")
    missing_heads: list[str] = Field(description="face tasks with no model in the repository")
    timings_ms: dict[str, float]


class BatchAnalysis(BaseModel):
    results: list[Analysis]


class Label(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    request_id: str | None = Field(None, description=REQUEST_ID)
    model: str
    width: int
    height: int
    top_k: list[Label]


class ModelsInfo(BaseModel):
    backend: str
    repository: str
    models: list[dict]
    missing: list[str] = Field(description="models the manifest declares that are not built")
    detectors: list[str]
    default_detector: str


# ---- identity: the gallery, verify, identify -----------------------------------------------------------


class FaceRecord(BaseModel):
    """An enrolled face: where it was in its photo, never its vector (and never the photo)."""

    id: str
    identity_id: str
    box: Box
    image_sha256: str = Field(description="sha256 of the image bytes it was enrolled from")
    model: str = Field(description="embedding model, as name:version")
    has_thumbnail: bool
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
    metadata_keys: list[str] = Field(description="the metadata object's top-level keys, sorted")
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


class Verification(BaseModel):
    same_person: bool = Field(description="similarity >= threshold")
    similarity: float = Field(description="cosine similarity of the two faces' embeddings, -1..1")
    threshold: float
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
    model: str = Field(description="embedding model, as name:version")


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
    identity_ids: list[str] = Field(description="the identities it created, changed or deleted")
    face_ids: list[str] = Field(description="the faces it added or deleted")
    identities: int = Field(description="how many identities")
    faces: int = Field(description="how many faces")


class AuditPage(BaseModel):
    entries: list[AuditEntry] = Field(description="oldest first")
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")


# ---- feedback ------------------------------------------------------------------------------------------


class FeedbackRecord(BaseModel):
    """A stored correction, with the model that answered and the image it answered about."""

    id: str
    request_id: str
    face_index: int | None
    field: str
    model_said: str
    correct: str
    comment: str
    model: str = Field(description="the model that answered the field, as name:version")
    image_sha256: str
    created_at: str


class Confusion(BaseModel):
    model_said: str
    correct: str
    count: int


class FieldFeedback(BaseModel):
    field: str
    count: int = Field(description="corrections of this field")
    confusions: list[Confusion] = Field(description="the most frequent (model said, correct) pairs, most frequent first")


class FeedbackSummary(BaseModel):
    total: int
    fields: list[FieldFeedback]


class Job(BaseModel):
    """An asynchronous job (`/jobs/submit`) and its progress; its results are `/jobs/results`."""

    id: str
    state: str = Field(description="queued (waiting or running) | done | cancelled")
    total: int = Field(description="images in the job")
    done: int = Field(description="images analysed")
    failed: int = Field(description="images that could not be analysed (their result line says why)")
    cancelled: int = Field(description="images not analysed because the job was cancelled")
    created_at: str
    finished_at: str | None
