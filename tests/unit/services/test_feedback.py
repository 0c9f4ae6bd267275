"""`faceserve/services/feedback.py`: answers remembered as their caller's, corrected by them alone, summarised;
an unreachable store loses the feedback, never the answer."""

from __future__ import annotations

import csv
import io

import pytest

from faceserve.errors import FaceserveError, StoreUnavailable
from faceserve.feedback import Answer, FieldModel
from faceserve.http.caller import Caller

ALICE, MALLORY = Caller("10.0.0.1", "alice"), Caller("10.0.0.2", "mallory")
ANSWER = Answer("ab" * 32, {"emotion": FieldModel("emotion_cnn:2", ("happy", "sad"))}, [{"emotion": "sad"}])


def test_a_correction_answers_its_model_as_name_and_version(services, run):
    feedback = services.feedback
    request_id = run(feedback.remember(ALICE.principal, ANSWER))
    record = run(feedback.correct(ALICE, request_id, 0, "emotion", "happy", comment="smiling"))
    assert (record.request_id, record.face_index, record.field, record.model_said, record.correct, record.comment,
            record.model, record.image_sha256) == (request_id, 0, "emotion", "sad", "happy", "smiling",
                                                   "emotion_cnn:2", "ab" * 32)
    with pytest.raises(FaceserveError) as refused:
        run(feedback.correct(MALLORY, request_id, 0, "emotion", "sad"))
    assert (refused.value.status, refused.value.code) == (404, "unknown_request")
    summary = run(feedback.summary())
    assert summary.total == 1
    assert [(f.field, f.count, [(c.model_said, c.correct, c.count) for c in f.confusions])
            for f in summary.fields] == [("emotion", 1, [("sad", "happy", 1)])]
    rows = list(csv.reader(io.StringIO(run(feedback.export_csv()))))
    assert len(rows) == 2 and rows[1][rows[0].index("model_name")] == "emotion_cnn"


def test_an_unreachable_store_loses_the_feedback_not_the_answer(services, run, monkeypatch):
    async def unreachable():
        raise StoreUnavailable("the store cannot be reached")

    monkeypatch.setattr(services.resources, "feedback", unreachable)
    assert run(services.feedback.remember(ALICE.principal, ANSWER)) is None
    with pytest.raises(StoreUnavailable):
        run(services.feedback.summary())
