"""Remembered answers and the corrections users send for them."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import logging
import time
import uuid

from faceserve.errors import InvalidRequest, NotFound, StoreUnavailable
from faceserve.feedback.migrations import MIGRATIONS
from faceserve.feedback.records import Answer, Confusion, Correction, FeedbackSummary, FieldFeedback
from faceserve.feedback.writer import GroupWriter
from faceserve.gallery.validation import MAX_NAME_CHARS
from faceserve.models.versions import parse_model_ref
from faceserve.store import Store, first_id_at, new_id, utc_now

log = logging.getLogger(__name__)

# The most characters each text of a correction may hold: ids and field names are short; a correct value or what
# the model said is a label, a number or an identity's name (bounded as the gallery bounds names).
MAX_CHARS = {"request_id": 64, "field": 64, "correct": MAX_NAME_CHARS, "model_said": MAX_NAME_CHARS, "comment": 2000}
MAX_AGE = 150
CONFUSIONS_SHOWN = 5
# Every FORGET_EVERY answers a process remembers, it forgets up to that many expired ones: the table stays
# bounded at a steady rate without a scheduler, and no single request pays for a large delete.
FORGET_EVERY = 1000
# A remembered answer is written within this long of its id being made, with room for a busy store (a group's window
# and commit take milliseconds): until then a correction that finds no answer may have reached another process than
# the one that answered, whose writer still holds it, and is looked up again (faceserve/services/feedback.py).
SETTLE_S = 2.0
# A cell starting with one of these is a formula to a spreadsheet (OWASP, CSV injection): the export prefixes it
# with a quote, which the spreadsheet shows as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
COMPARISON_COLUMNS = ("request_id", "field", "face_index", "model", "mode", "serving_version", "candidate_version",
                      "answered_by", "serving_said", "candidate_said", "serving_ms", "candidate_ms", "created_at")
CSV_COLUMNS = ("created_at", "request_id", "face_index", "field", "model_said", "correct", "comment", "model_name",
               "model_version", "image_sha256")


class Feedback:
    """Every method is synchronous and thread-safe; any number of processes may share the store. Answers are
    written by a thread of the instance's own (`GroupWriter`): `close` it before the store."""

    def __init__(self, store: Store, answers_kept_days: float = 0, group_window_s: float = 0.0):
        """`answers_kept_days` > 0: answers older than that, never corrected, are forgotten (a correction of
        one is then a 404); 0 keeps every answer. `group_window_s`: how long a remembered answer may wait for
        others to share its commit (0: those queued while the last group was written share it)."""
        store.migrate("feedback", MIGRATIONS)
        self.store = store
        self.answers_kept = datetime.timedelta(days=answers_kept_days) if answers_kept_days > 0 else None
        self._remembered = 0  # written by this process (counted by the writer's thread alone)
        self.writer = GroupWriter(self._write_answers, name="feedback answers writer", window_s=group_window_s)

    def remember(self, owner: str, answer: Answer, *, block: bool = True, request_id: str | None = None) -> str | None:
        """Remember what `owner` (the caller's principal) was answered; the request id to correct it by, which only
        `owner` may. The answer is queued and written by this process's writer (writer.py says what a kill can
        lose); None only when not `block` and the queue is full. Raises `StoreUnavailable` when the queue stays
        full or the writer is stopped. `request_id`: one made (`new_id`) before the answer, which its trials drew
        by."""
        request_id = request_id or new_id()
        queued = _Remembered(request_id, owner, utc_now(), answer)
        if not self.writer.put(request_id, queued, len(answer.image or b""), block=block):
            return None
        return request_id

    def flush(self, request_id: str | None = None, timeout_s: float | None = None) -> bool:
        """Wait until the answer `request_id` (None: every answer remembered so far) is written; whether it was
        within `timeout_s`."""
        return self.writer.flush(request_id, timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write every queued answer (for up to `timeout_s` while the store cannot be reached) and stop the writer;
        the store stays open."""
        self.writer.close(timeout_s)

    def settling(self, request_id: str) -> bool:
        """Whether `request_id` may be an answer another process has queued and not yet written: it was made less
        than SETTLE_S ago."""
        try:
            made_ms = uuid.UUID(request_id).int >> 80
        except ValueError:
            return False
        return 0 <= time.time() * 1000 - made_ms < SETTLE_S * 1000

    def _write_answers(self, answers: list[_Remembered]) -> None:
        """One group of queued answers in one transaction (the writer's thread); then, every FORGET_EVERY
        answers, the expired ones forgotten."""
        with self.store.transaction() as tx:
            tx.executemany("INSERT INTO feedback_requests (id, owner, created_at, image_sha256, fields, per_face, "
                           "answers, image) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [a.row() for a in answers])
            compared = [row for a in answers for row in a.compared_rows()]
            if compared:
                tx.executemany(f"INSERT INTO feedback_comparisons ({', '.join(COMPARISON_COLUMNS)}) "
                               f"VALUES ({', '.join('?' * len(COMPARISON_COLUMNS))})", compared)
        before, self._remembered = self._remembered, self._remembered + len(answers)
        if self.answers_kept is not None and before // FORGET_EVERY != self._remembered // FORGET_EVERY:
            try:  # the group is committed: a failure here must not make the writer write it again
                self.forget_answers_before(datetime.datetime.now(datetime.timezone.utc) - self.answers_kept)
            except StoreUnavailable as exc:
                log.warning("expired answers not forgotten this time: %s", exc.message)

    def forget_answers_before(self, moment: datetime.datetime, limit: int = FORGET_EVERY) -> int:
        """Forget up to `limit` of the oldest answers remembered before `moment` that no correction refers to
        (a corrected answer stays with its correction, image included); how many were forgotten."""
        with self.store.transaction() as tx:
            return tx.execute(
                "DELETE FROM feedback_requests WHERE id IN (SELECT r.id FROM feedback_requests r WHERE r.id < ? "
                "AND NOT EXISTS (SELECT 1 FROM feedback_corrections c WHERE c.request_id = r.id) "
                "ORDER BY r.id LIMIT ?)", (first_id_at(moment), limit)).rowcount

    def correct(self, owner: str, request_id: str, face_index: int | None, field: str, correct: str,
                model_said: str | None = None, comment: str | None = None) -> Correction:
        """Store `owner`'s correction of what request `request_id` answered them for `field` (of face
        `face_index`); every inconsistency with that answer is an error naming it. Another caller's request is
        unknown to `owner`, exactly as an id nobody was given."""
        for name, text in (("request_id", request_id), ("field", field), ("correct", correct),
                           ("model_said", model_said), ("comment", comment)):
            if text is not None and len(text) > MAX_CHARS[name]:
                raise InvalidRequest(f"{name} is {len(text)} characters; at most {MAX_CHARS[name]}",
                                     code=f"{name}_too_long")
            if text is not None and "\x00" in text:  # PostgreSQL text cannot hold it
                raise InvalidRequest(f"{name} holds a NUL character", code="invalid_value")
        if self.writer.holds(request_id):  # answered a moment ago: its answer is still queued here
            self.flush(request_id)
        with self.store.read() as tx:
            row = tx.one("SELECT image_sha256, fields, per_face, answers FROM feedback_requests WHERE id = ? "
                         "AND owner = ?", (request_id, owner))
        if row is None:
            raise NotFound(f"no answered request has the id {request_id!r}", code="unknown_request")
        image_sha256, fields, per_face, answers = row[0], json.loads(row[1]), bool(row[2]), json.loads(row[3])
        if field not in fields:
            raise InvalidRequest(f"request {request_id} answered no field {field!r}; it answered "
                                 f"{', '.join(sorted(fields))}", code="unknown_field")
        entry = _answer_for(answers, face_index, per_face)
        said = entry.get(field)
        if model_said is not None and model_said != said:
            raise InvalidRequest(f"model_said {model_said!r} is not what the model said for {field}: {said!r}",
                                 code="model_said_mismatch")
        correct = _checked_value(field, correct, fields[field]["labels"])
        comment = comment or ""
        name, version = parse_model_ref(fields[field]["model"])
        correction = Correction(new_id(), request_id, face_index, field, str(said), correct, comment, name, version,
                                image_sha256, utc_now())
        with self.store.transaction() as tx:
            tx.execute(f"INSERT INTO feedback_corrections ({', '.join(_CORRECTION_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(_CORRECTION_COLUMNS))})",
                       tuple(getattr(correction, c) for c in _CORRECTION_COLUMNS))
        return correction

    def export_csv(self) -> str:
        """Every correction, oldest first, one CSV row each (CSV_COLUMNS), every cell quoted and none a formula to a
        spreadsheet."""
        with self.store.read() as tx:
            rows = tx.all(f"SELECT {', '.join(CSV_COLUMNS)} FROM feedback_corrections ORDER BY id")
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL)
        writer.writerow(CSV_COLUMNS)
        writer.writerows([_inert(cell) for cell in row] for row in rows)
        return out.getvalue()

    def summary(self) -> FeedbackSummary:
        with self.store.read() as tx:
            counts = tx.all("SELECT field, COUNT(*) FROM feedback_corrections GROUP BY field ORDER BY field")
            pairs = tx.all("SELECT field, model_said, correct, COUNT(*) FROM feedback_corrections "
                           "GROUP BY field, model_said, correct")
        confusions: dict[str, list[Confusion]] = {}
        for field, said, correct, count in sorted(pairs, key=lambda p: (-p[3], p[1], p[2])):
            confusions.setdefault(field, []).append(Confusion(model_said=said, correct=correct, count=count))
        return FeedbackSummary(total=sum(count for _, count in counts),
                               fields=[FieldFeedback(field=field, count=count,
                                                     confusions=confusions[field][:CONFUSIONS_SHOWN])
                                       for field, count in counts])


_CORRECTION_COLUMNS = tuple(f.name for f in dataclasses.fields(Correction))


@dataclasses.dataclass(frozen=True)
class _Remembered:
    """An answer waiting in the writer's queue; its row is built by the writer's thread, off the request's path."""

    request_id: str
    owner: str
    created_at: str
    answer: Answer

    def row(self) -> tuple:
        answer = self.answer
        fields = {name: {"model": f.model, "labels": list(f.labels) if f.labels is not None else None}
                  for name, f in answer.fields.items()}
        return (self.request_id, self.owner, self.created_at, answer.image_sha256, json.dumps(fields),
                int(answer.per_face), json.dumps(answer.answers), answer.image)

    def compared_rows(self) -> list[tuple]:
        """One `feedback_comparisons` row per field on trial and face (COMPARISON_COLUMNS)."""
        return [(self.request_id, c.field, index, c.model, c.mode, c.serving_version, c.candidate_version,
                 c.candidate_version if c.answered_by_candidate else c.serving_version, serving, candidate,
                 c.serving_ms, c.candidate_ms, self.created_at)
                for c in self.answer.compared for index, (serving, candidate) in enumerate(zip(c.serving_said,
                                                                                               c.candidate_said))]


def _inert(cell) -> str:
    """The cell as text a spreadsheet shows and never evaluates (OWASP's rule for CSV injection)."""
    text = "" if cell is None else str(cell)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _answer_for(answers: list[dict], face_index: int | None, per_face: bool) -> dict:
    if not per_face:
        if face_index not in (None, 0):
            raise InvalidRequest("this request answered for the whole image: give no face_index",
                                 code="face_index_out_of_range")
        return answers[0]
    if face_index is None or not 0 <= face_index < len(answers):
        raise InvalidRequest(f"face_index {face_index} is out of range: the request answered {len(answers)} faces"
                             + (f" (0 to {len(answers) - 1})" if answers else ""), code="face_index_out_of_range")
    return answers[face_index]


def _checked_value(field: str, correct: str, labels: list[str] | None) -> str:
    correct = str(correct).strip()
    if labels is not None:
        if correct not in labels:
            raise InvalidRequest(f"{correct!r} is not a label of the {field} model; its labels: {', '.join(labels)}",
                                 code="unknown_label")
        return correct
    if field == "age":
        try:
            age = float(correct)
        except ValueError:
            age = -1.0
        if not 0 <= age <= MAX_AGE:
            raise InvalidRequest(f"age must be a number of years from 0 to {MAX_AGE}, got {correct!r}",
                                 code="invalid_value")
        return correct
    if not correct:
        raise InvalidRequest(f"give the correct {field}", code="invalid_value")
    return correct
