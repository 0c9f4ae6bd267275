"""Feedback attacked (issue 20, findings 8, 10, 13), on both engines: a request id is not guessable and only its own
caller may correct it; the CSV export holds no cell a spreadsheet would evaluate; every text of a correction is
bounded. Each refusal names its code and leaves every stored row as it was."""

from __future__ import annotations

import csv
import io
import uuid

import pytest

from faceserve.errors import FaceserveError
from faceserve.feedback import Answer, Feedback, FieldModel
from faceserve.feedback.feedback import MAX_CHARS
from faceserve.feedback.migrations import MIGRATIONS
from faceserve.http.caller import Caller
from faceserve.store import new_id, open_store

FIELDS = {"emotion": FieldModel("emotion:1", ("angry", "happy", "sad")), "age": FieldModel("age:1"),
          "identity": FieldModel("faceres:1")}
ALICE, BOB = Caller("192.0.2.1").principal, Caller("192.0.2.2").principal
ALICE_KEY, BOB_KEY = Caller("192.0.2.1", key_id="alice").principal, Caller("192.0.2.1", key_id="bob").principal
# Every start a spreadsheet takes for a formula (OWASP, CSV injection), and the export's cure: a leading quote.
FORMULAS = ("=1+1", "+1+1", "-1+1", "@SUM(1,1)", "\t=1+1", "\r=1+1", '=HYPERLINK("http://x.example","y")')


@pytest.fixture
def store(store_url_each_engine):
    with open_store(store_url_each_engine) as store:
        yield store


@pytest.fixture
def feedback(store):
    feedback = Feedback(store)
    yield feedback
    feedback.close()


def remember(feedback: Feedback, owner: str, identity: str = "unknown") -> str:
    """A remembered answer's request id, the answer written (so that a refusal's check sees the store settled)."""
    request_id = feedback.remember(owner, Answer("ab" * 32, FIELDS, [{"emotion": "happy", "age": "31.0",
                                                                      "identity": identity}]))
    feedback.flush()
    return request_id


def stored_rows(store) -> dict[str, list[tuple]]:
    with store.read() as tx:
        return {table: tx.all(f"SELECT * FROM {table} ORDER BY id")
                for table in ("feedback_requests", "feedback_corrections")}


def refused(store, attempt) -> FaceserveError:
    """The error `attempt` raises, having changed nothing stored."""
    before = stored_rows(store)
    with pytest.raises(FaceserveError) as error:
        attempt()
    assert stored_rows(store) == before
    return error.value


def test_another_callers_request_id_is_answered_as_an_unknown_one(store, feedback):
    for owner, other in ((ALICE, BOB), (ALICE_KEY, BOB_KEY), (ALICE_KEY, ALICE)):
        request_id = remember(feedback, owner)
        nobodys = str(uuid.UUID(int=uuid.UUID(request_id).int ^ 1))  # an id no answer has
        theirs = refused(store, lambda: feedback.correct(other, request_id, 0, "emotion", "sad"))
        unknown = refused(store, lambda: feedback.correct(other, nobodys, 0, "emotion", "sad"))
        assert (theirs.status, theirs.code) == (unknown.status, unknown.code) == (404, "unknown_request")
        assert theirs.message == unknown.message.replace(nobodys, request_id)
        assert feedback.correct(owner, request_id, 0, "emotion", "sad").request_id == request_id
    with store.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM feedback_corrections") == (3,)


def test_request_ids_of_one_burst_are_ordered_yet_unguessable():
    ids = [uuid.UUID(new_id()) for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and {i.version for i in ids} == {7}
    steps = [b.int - a.int for a, b in zip(ids, ids[1:])]
    # Counting up by one (or any small step) would make the next caller's id one guess away.
    assert min(steps) > 2**32
    random_halves = {i.int & (2**62 - 1) for i in ids}
    assert len(random_halves) == len(ids)


@pytest.mark.parametrize("cell", FORMULAS)
def test_the_export_holds_no_formula_whatever_was_said_or_written(store, feedback, cell):
    """A comment, a correct identity and an enrolled name the model said (echoed as `model_said`) may each start
    like a formula: every cell of the export is quoted and none starts like one."""
    request_id = remember(feedback, ALICE, identity=cell)
    feedback.correct(ALICE, request_id, 0, "identity", cell, model_said=cell, comment=cell)
    feedback.correct(ALICE, request_id, 0, "emotion", "sad", comment=f"{cell} plain text after")
    text = feedback.export_csv()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 3 and rows[0][1] == "request_id"
    for row in rows:
        for value in row:
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r", "\n")), (row, value)
    header, identity, emotion = rows
    identity = dict(zip(header, identity))
    assert identity["comment"] == identity["model_said"] == "'" + cell
    assert identity["correct"] == "'" + cell.strip()  # a correct value is stored stripped
    assert dict(zip(header, emotion))["comment"] == f"'{cell} plain text after"
    quoted = io.StringIO()
    csv.writer(quoted, quoting=csv.QUOTE_ALL).writerows(rows)
    assert text == quoted.getvalue()  # every cell in quotes


@pytest.mark.parametrize("name, change", [
    ("correct", {"correct": "x" * (MAX_CHARS["correct"] + 1)}),
    ("model_said", {"model_said": "x" * (MAX_CHARS["model_said"] + 1)}),
    ("comment", {"comment": "x" * (MAX_CHARS["comment"] + 1)}),
    ("field", {"field": "x" * (MAX_CHARS["field"] + 1)}),
    ("request_id", {"request_id": "x" * (MAX_CHARS["request_id"] + 1)}),
])
def test_every_text_of_a_correction_is_bounded(store, feedback, name, change):
    correction = {"request_id": remember(feedback, ALICE), "face_index": 0, "field": "identity",
                  "correct": "Ada Lovelace", **change}
    error = refused(store, lambda: feedback.correct(ALICE, **correction))
    assert (error.status, error.code) == (400, f"{name}_too_long")
    assert f"{name} is {MAX_CHARS[name] + 1} characters; at most {MAX_CHARS[name]}" == error.message
    at_most = {key: value[:MAX_CHARS[key]] if key == name else value for key, value in correction.items()}
    if name == "correct":  # the longest name allowed is taken
        assert len(feedback.correct(ALICE, **at_most).correct) == MAX_CHARS["correct"]


def test_answers_remembered_before_owners_were_kept_are_nobodys(store):
    store.migrate("feedback", MIGRATIONS[:2])  # the schema of before
    with store.transaction() as tx:
        tx.execute("INSERT INTO feedback_requests (id, created_at, image_sha256, fields, per_face, answers) "
                   "VALUES (?, '2026-01-01T00:00:00+00:00', ?, ?, 1, ?)",
                   (new_id(), "ab" * 32, '{"emotion": {"model": "emotion:1", "labels": ["happy", "sad"]}}',
                    '[{"emotion": "happy"}]'))
        (old,) = tx.one("SELECT id FROM feedback_requests")
    feedback = Feedback(store)  # migrates
    for caller in (ALICE, BOB, ALICE_KEY, Caller("local").principal):
        error = refused(store, lambda: feedback.correct(caller, old, 0, "emotion", "sad"))
        assert (error.status, error.code) == (404, "unknown_request")
    assert feedback.correct(ALICE, remember(feedback, ALICE), 0, "emotion", "sad").correct == "sad"
    feedback.close()
