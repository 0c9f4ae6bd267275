"""What feedback takes in and hands out: the answers it remembers, the corrections it stores, and their response
models (a stored correction builds its answer by `Correction.answer`)."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, Field

from faceserve.models.versions import model_ref


@dataclasses.dataclass(frozen=True)
class FieldModel:
    """The model that answered a field ("name:version") and its labels (None: a number or a name, not a label)."""

    model: str
    labels: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Compared:
    """What a field's serving version and its candidate (a trial: `faceserve.models.rollout`) said for one request,
    face by face, as text (a label, or a number for a field without labels), and each one's milliseconds."""

    field: str
    model: str  # the model's name
    mode: str  # shadow or canary
    serving_version: str
    candidate_version: str
    answered_by_candidate: bool
    serving_said: list[str]
    candidate_said: list[str]
    serving_ms: float
    candidate_ms: float


@dataclasses.dataclass(frozen=True)
class Answer:
    """What one request answered: per face (or, for a whole-image answer, one entry), each field's value."""

    image_sha256: str
    fields: dict[str, FieldModel]
    answers: list[dict[str, str]]
    per_face: bool = True
    image: bytes | None = None  # kept only when the caller opted in
    compared: tuple[Compared, ...] = ()  # the trials this request ran


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


@dataclasses.dataclass(frozen=True)
class Correction:
    """A stored correction, one field per column of `feedback_corrections`."""

    id: str
    request_id: str
    face_index: int | None
    field: str
    model_said: str
    correct: str
    comment: str
    model_name: str
    model_version: str
    image_sha256: str
    created_at: str

    def answer(self) -> FeedbackRecord:
        return FeedbackRecord(id=self.id, request_id=self.request_id, face_index=self.face_index, field=self.field,
                              model_said=self.model_said, correct=self.correct, comment=self.comment,
                              model=model_ref(self.model_name, self.model_version), image_sha256=self.image_sha256,
                              created_at=self.created_at)


class Confusion(BaseModel):
    model_said: str
    correct: str
    count: int


class FieldFeedback(BaseModel):
    field: str
    count: int = Field(description="corrections of this field")
    confusions: list[Confusion] = Field(
        description="the most frequent (model said, correct) pairs, most frequent first")


class FeedbackSummary(BaseModel):
    total: int
    fields: list[FieldFeedback]
