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


# Where a face is and what its features' positions say, filled before the heads run.
PLACEMENT_FIELDS: tuple[str, ...] = ("box", "score", "landmarks", "pose")
# The per-face fields the schema types, in response order; the heads present fill them.
HEAD_FIELDS: tuple[str, ...] = tuple(name for name in Face.model_fields if name not in PLACEMENT_FIELDS)


class Analysis(BaseModel):
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
