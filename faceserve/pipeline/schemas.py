"""One photo's analysis as answered: `/analyze` (and the CLI, and the Triton pipeline model), `/analyze_batch`,
`/classify`. The other answers live beside their concern: the gallery's in `faceserve.gallery.records`, verify's
and identify's in `faceserve.pipeline.identity`, feedback's in `faceserve.feedback.records`, a job's in
`faceserve.jobs.queue`, `/models`' in `faceserve.services.models`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from faceserve.models.calibration import OperatingPoint


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
    model: str | None = Field(None, description="the embedding model the similarity is from, as name:version, where "
                                                "it is not the serving one: the identity was enrolled under an "
                                                "earlier model and is not yet re-embedded")


class Quality(BaseModel):
    """How useful the face is for recognition (faceserve/pipeline/quality.py); enrolment refuses a face under the
    bars of docs/identity.md."""

    width: float = Field(description="the box's width in image pixels")
    height: float = Field(description="the box's height in image pixels")
    size: float = Field(description="the box's smaller side in image pixels")
    sharpness: float = Field(description="variance of the Laplacian of the face's grey crop at 128x128: "
                                         "a blurred or upscaled face scores low")
    turn: float | None = Field(description="degrees: the larger of |yaw| and |pitch| (a turned face hides half "
                                           "its features; roll hides none); null without a landmark model")
    presence: float | None = Field(description="the face mesh's probability that the crop holds a face, 0..1; "
                                               "null without a landmark model")


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
    quality: Quality | None = Field(None, description="size, sharpness, turn and presence of the face")
    emotion: LabelScores | None = None
    gender: LabelScores | None = None
    age: float | None = Field(None, description="estimated age in years")
    identity: IdentityMatch | None = Field(
        None, description="with `identify`: the closest enrolled identity at or above the similarity threshold, "
                          "null when the face is nobody known (or `identify` was not asked)")


# Where a face is and what its features' positions say, filled before the heads run.
PLACEMENT_FIELDS: tuple[str, ...] = ("box", "score", "landmarks", "pose", "quality")
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
    identity_operating_point: OperatingPoint | None = Field(
        None, description="with `identify`: the threshold each face's `identity` was matched at, and the false "
                          "accept and reject rates it stands for (as `/identify` answers it)")
    # what the trials of candidate versions compared (`faceserve.models.rollout.Comparison`): remembered, not answered
    _comparisons: list = PrivateAttr(default_factory=list)

    @property
    def comparisons(self) -> list:
        return self._comparisons

    @comparisons.setter
    def comparisons(self, value: list) -> None:
        self._comparisons = value


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
