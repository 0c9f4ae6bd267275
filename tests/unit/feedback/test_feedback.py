"""Feedback over a real SQLite store: answers remembered, corrections checked against them, export, summary."""

from __future__ import annotations

import csv
import datetime
import io

import pytest

from faceserve.errors import FaceserveError
from faceserve.feedback import Answer, Feedback, FieldModel
from faceserve.http.caller import Caller
from faceserve.store import first_id_at, open_store

FIELDS = {"emotion": FieldModel("emotion:1", ("angry", "happy", "sad")), "age": FieldModel("age:1"),
          "identity": FieldModel("faceres:1")}
# Two callers without keys, told apart by their addresses.
ALICE, BOB = Caller("192.0.2.1").principal, Caller("192.0.2.2").principal


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'faceserve.db'}"


@pytest.fixture
def feedback(store_url):
    with open_store(store_url) as store:
        feedback = Feedback(store)
        yield feedback
        feedback.close()


def two_faces(feedback: Feedback, owner: str = ALICE) -> str:
    return feedback.remember(owner, Answer("ab" * 32, FIELDS, [{"emotion": "happy", "age": "31.0", "identity": "unknown"},
                                                         {"emotion": "sad", "age": "8.5", "identity": "Ada"}]))


def test_a_correction_is_exported_with_the_model_and_survives_reopening(store_url, feedback):
    request_id = two_faces(feedback)
    stored = feedback.correct(ALICE, request_id, 1, "emotion", "angry", model_said="sad", comment="frowning")
    assert (stored.model_name, stored.model_version, stored.model_said) == ("emotion", "1", "sad")
    with open_store(store_url) as again:
        rows = list(csv.DictReader(io.StringIO(Feedback(again).export_csv())))
    assert rows == [{"created_at": stored.created_at, "request_id": request_id, "face_index": "1", "field": "emotion",
                     "model_said": "sad", "correct": "angry", "comment": "frowning", "model_name": "emotion",
                     "model_version": "1", "image_sha256": "ab" * 32}]


def test_summary_counts_per_field_and_orders_confusions(feedback):
    request_id = two_faces(feedback)
    for correct in ("angry", "angry", "happy"):
        feedback.correct(ALICE, request_id, 1, "emotion", correct)
    feedback.correct(ALICE, request_id, 0, "age", "45")
    summary = feedback.summary()
    assert summary.total == 4
    (age, emotion) = summary.fields
    assert (age.field, age.count, age.confusions[0].model_said, age.confusions[0].correct) == ("age", 1, "31.0", "45")
    assert emotion.count == 3
    assert [(c.model_said, c.correct, c.count) for c in emotion.confusions] == [("sad", "angry", 2), ("sad", "happy", 1)]


def test_a_whole_image_answer_takes_no_face_index(feedback):
    request_id = feedback.remember(ALICE, Answer("cd" * 32, {"label": FieldModel("nsfw:1", ("drawing", "neutral"))},
                                          [{"label": "neutral"}], per_face=False))
    assert feedback.correct(ALICE, request_id, None, "label", "drawing").model_said == "neutral"


@pytest.mark.parametrize("args, code, named", [
    (("0190aaaa-0000-7000-8000-000000000000", 0, "emotion", "sad"), "unknown_request", "0190aaaa"),
    ((None, 0, "hair", "sad"), "unknown_field", "age, emotion, identity"),
    ((None, 2, "emotion", "sad"), "face_index_out_of_range", "2 faces (0 to 1)"),
    ((None, None, "emotion", "sad"), "face_index_out_of_range", "face_index None"),
    ((None, 0, "emotion", "bored"), "unknown_label", "angry, happy, sad"),
    ((None, 0, "age", "old"), "invalid_value", "'old'"),
])
def test_bad_feedback_names_what_is_wrong(feedback, args, code, named):
    request_id = two_faces(feedback)
    with pytest.raises(FaceserveError) as error:
        feedback.correct(ALICE, args[0] or request_id, *args[1:])
    assert error.value.code == code and 400 <= error.value.status < 500 and named in error.value.message
    assert feedback.summary().total == 0


def test_model_said_must_be_what_the_model_said(feedback):
    with pytest.raises(FaceserveError, match="'happy' is not what the model said for emotion: 'sad'"):
        feedback.correct(ALICE, two_faces(feedback), 1, "emotion", "angry", model_said="happy")


def test_old_uncorrected_answers_are_forgotten_and_corrected_ones_kept(store_url_each_engine):
    with open_store(store_url_each_engine) as store:
        feedback = Feedback(store)
        corrected, forgotten, another = two_faces(feedback), two_faces(feedback), two_faces(feedback)
        feedback.flush()
        feedback.correct(ALICE, corrected, 0, "emotion", "angry")
        cutoff = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
        assert feedback.forget_answers_before(cutoff - datetime.timedelta(days=1)) == 0  # none is that old
        assert feedback.forget_answers_before(cutoff, limit=1) == 1  # the oldest uncorrected first
        with pytest.raises(FaceserveError) as gone:
            feedback.correct(ALICE, forgotten, 0, "emotion", "angry")
        assert (gone.value.status, gone.value.code) == (404, "unknown_request")
        feedback.correct(ALICE, another, 1, "age", "9")  # not forgotten yet: the limit held
        assert feedback.forget_answers_before(cutoff) == 0  # what is left is corrected
        feedback.correct(ALICE, corrected, 1, "emotion", "happy")  # its answer is still there
        assert feedback.summary().total == 3
        feedback.close()


def test_a_process_forgets_expired_answers_as_it_remembers_new_ones(tmp_path, monkeypatch):
    import faceserve.feedback.feedback as module
    monkeypatch.setattr(module, "FORGET_EVERY", 3)
    with open_store(f"sqlite:///{tmp_path / 'faceserve.db'}") as store:
        feedback = Feedback(store, answers_kept_days=1)
        old = [two_faces(feedback) for _ in range(2)]
        feedback.flush()
        with store.transaction() as tx:  # made two days ago, as far as the ids and timestamps tell
            for request_id in old:
                two_days_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
                aged = first_id_at(two_days_ago)[:24] + request_id[24:]
                tx.execute("UPDATE feedback_requests SET id = ? WHERE id = ?", (aged, request_id))
        with store.read() as tx:
            assert tx.one("SELECT COUNT(*) FROM feedback_requests") == (2,)
        fresh = two_faces(feedback)  # the third answer of this process: it forgets what expired
        feedback.close()
        with store.read() as tx:
            assert tx.all("SELECT id FROM feedback_requests") == [(fresh,)]
        keep_all = Feedback(store)  # 0 days: nothing is ever forgotten
        for _ in range(6):
            two_faces(keep_all)
        keep_all.close()
        with store.read() as tx:
            assert tx.one("SELECT COUNT(*) FROM feedback_requests") == (7,)
