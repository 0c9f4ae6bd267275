"""Remembered answers written in the background (faceserve/feedback/writer.py): group commits in queue order, a
bounded queue that makes the caller wait, nothing lost on a clean stop or while the store is away, a correction of an
answer still queued (here or in another process) that still works; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from faceserve.errors import FaceserveError, StoreUnavailable
from faceserve.feedback import Answer, Feedback, FieldModel
from faceserve.feedback.writer import GroupWriter
from faceserve.http.caller import Caller
from faceserve.services.feedback import FeedbackService
from faceserve.store import open_store

ALICE = Caller("192.0.2.1")
ANSWER = Answer("ab" * 32, {"emotion": FieldModel("emotion:1", ("happy", "sad"))}, [{"emotion": "happy"}])


class Recorder:
    """A `write` that records each group, and can be held (blocks until released) or made to fail."""

    def __init__(self):
        self.groups: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.unavailable = 0  # the next this many writes raise StoreUnavailable
        self.bad: set = set()  # items whose write raises a non-store error

    def __call__(self, items: list) -> None:
        self.entered.set()
        self.gate.wait()
        if self.unavailable:
            self.unavailable -= 1
            raise StoreUnavailable("the store cannot be reached")
        if self.bad & set(items):
            raise ValueError(f"cannot write {sorted(self.bad & set(items))}")
        self.groups.append(list(items))

    @property
    def written(self) -> list:
        return [item for group in self.groups for item in group]


def writer(recorder: Recorder, **options) -> GroupWriter:
    return GroupWriter(recorder, name="test writer", **{"retry_s": 0.05, **options})


def test_answers_queued_during_a_commit_share_the_next_one_in_order():
    recorder = Recorder()
    queue = writer(recorder)
    recorder.gate.clear()
    queue.put(0, 0)
    assert recorder.entered.wait(5)  # the first group is being written, held
    for item in range(1, 51):
        assert queue.put(item, item)
    assert len(queue) == 51 and queue.holds(50) and not queue.holds(51)
    recorder.gate.set()
    assert queue.flush(timeout_s=5)
    assert recorder.groups == [[0], list(range(1, 51))] and len(queue) == 0 and not queue.holds(50)
    queue.close()


def test_a_window_gathers_a_trickle_into_one_group():
    recorder = Recorder()
    queue = writer(recorder, window_s=0.3)
    for item in range(5):
        queue.put(item, item)
        time.sleep(0.01)
    assert recorder.groups == []  # the first is still within its window
    assert queue.flush(timeout_s=5)  # a flush does not wait out the window
    assert recorder.groups == [[0, 1, 2, 3, 4]]
    queue.close()


def test_a_full_queue_makes_the_caller_wait_for_room_never_drops():
    recorder = Recorder()
    queue = writer(recorder, capacity=3, wait_s=5)
    recorder.gate.clear()
    for item in range(3):
        queue.put(item, item)
    assert queue.put(3, 3, block=False) is False  # full: the service then waits in a worker thread
    waited = threading.Thread(target=queue.put, args=(4, 4))
    waited.start()
    time.sleep(0.1)
    assert waited.is_alive() and len(queue) == 3
    recorder.gate.set()  # a commit frees room
    waited.join(5)
    assert not waited.is_alive()
    queue.close()
    assert recorder.written == [0, 1, 2, 4]


def test_the_byte_bound_holds_but_never_refuses_one_large_item():
    recorder = Recorder()
    queue = writer(recorder, capacity_bytes=100)
    recorder.gate.clear()
    assert queue.put("large", "large", size=500, block=False)  # alone in the queue: taken
    assert not queue.put("small", "small", size=1, block=False)  # beside it: over the bound
    recorder.gate.set()
    queue.close()
    assert recorder.written == ["large"]


def test_a_full_queue_behind_a_store_that_stays_away_is_refused_at_once():
    recorder = Recorder()
    recorder.unavailable = 10**6
    queue = writer(recorder, capacity=2, wait_s=30)
    queue.put(0, 0)
    queue.put(1, 1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"holds 2 items .*\(the store cannot be reached\)"):
        queue.put(2, 2)
    assert time.monotonic() - started < 5 and recorder.written == []
    recorder.unavailable = 0  # the store is back: what was queued is written, nothing lost
    assert queue.flush(timeout_s=5)
    assert recorder.written == [0, 1]
    queue.close()


def test_an_item_that_cannot_be_written_is_logged_and_the_others_written(caplog):
    recorder = Recorder()
    recorder.bad = {"poison"}
    queue = writer(recorder)
    recorder.gate.clear()
    for item in ("a", "poison", "b"):
        queue.put(item, item)
    recorder.gate.set()
    with caplog.at_level(logging.ERROR, logger="faceserve.feedback.writer"):
        queue.close()
    assert recorder.written == ["a", "b"]
    assert "'poison' not written: dropped" in caplog.text


def test_a_stop_writes_everything_queued_and_then_takes_nothing():
    recorder = Recorder()
    queue = writer(recorder, window_s=60)  # nothing would be written for a minute but for the stop
    for item in range(20):
        queue.put(item, item)
    queue.close()
    assert recorder.written == list(range(20))
    with pytest.raises(StoreUnavailable, match="stopping"):
        queue.put(20, 20)


def test_a_stop_with_the_store_away_names_what_it_loses(caplog):
    recorder = Recorder()
    recorder.unavailable = 10**6
    queue = writer(recorder)
    queue.put("r1", "r1")
    queue.put("r2", "r2")
    with caplog.at_level(logging.ERROR, logger="faceserve.feedback.writer"):
        started = time.monotonic()
        queue.close(timeout_s=0.3)
    assert time.monotonic() - started < 5 and len(queue) == 0
    # one line per group given up (r1 may have left as a group of its own before r2 came)
    lost = [record.getMessage() for record in caplog.records
            if "stopping with the store unreachable" in record.getMessage()]
    assert lost and sorted(key for line in lost for key in line.rsplit(": ", 1)[1].split(", ")) == ["r1", "r2"]


# ---- Feedback over a real store, each engine ---------------------------------------------------------------------


@pytest.fixture
def store(store_url_each_engine):
    with open_store(store_url_each_engine) as store:
        yield store


def stored_ids(store) -> list[str]:
    with store.read() as tx:
        return [row[0] for row in tx.all("SELECT id FROM feedback_requests ORDER BY id")]


def test_a_correction_of_an_answer_still_queued_writes_it_first(store):
    feedback = Feedback(store, group_window_s=60)  # an answer stays queued until something asks for it
    request_id = feedback.remember(ALICE.principal, ANSWER)
    assert feedback.writer.holds(request_id) and stored_ids(store) == []
    correction = feedback.correct(ALICE.principal, request_id, 0, "emotion", "sad")
    assert (correction.request_id, correction.model_said, correction.correct) == (request_id, "happy", "sad")
    assert stored_ids(store) == [request_id] and not feedback.writer.holds(request_id)
    feedback.close()


def test_answers_from_many_threads_are_written_in_groups_and_all_kept_on_a_clean_stop(store):
    feedback = Feedback(store, answers_kept_days=30, group_window_s=0.02)
    groups: list[int] = []
    write = feedback.writer._write
    feedback.writer._write = lambda items: (groups.append(len(items)), write(items))
    ids: list[str] = []

    def remember_many():
        ids.extend(feedback.remember(f"client:192.0.2.{n % 3}", ANSWER) for n in range(100))

    threads = [threading.Thread(target=remember_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    feedback.close()
    assert stored_ids(store) == sorted(ids) and len(ids) == 400
    assert sum(groups) == 400 and len(groups) < 400  # group commits: fewer commits than answers
    with store.read() as tx:
        owners = dict(tx.all("SELECT owner, COUNT(*) FROM feedback_requests GROUP BY owner"))
    assert sum(owners.values()) == 400 and set(owners) == {"client:192.0.2.0", "client:192.0.2.1", "client:192.0.2.2"}


class OneFeedback:
    """The slice of `Resources` that `FeedbackService` uses."""

    def __init__(self, feedback: Feedback):
        self._feedback = feedback

    async def feedback(self) -> Feedback:
        return self._feedback


def test_a_correction_reaching_another_process_waits_for_the_answering_ones_writer(store):
    """Two processes of one service: one answered, its writer still holds the answer; the correction reaches the
    other, which looks again until the answer is written."""
    answering, correcting = Feedback(store, group_window_s=0.3), Feedback(store)
    request_id = answering.remember(ALICE.principal, ANSWER)
    service = FeedbackService(OneFeedback(correcting))
    started = time.monotonic()
    record = asyncio.run(service.correct(ALICE, request_id, 0, "emotion", "sad"))
    assert (record.request_id, record.correct) == (request_id, "sad") and time.monotonic() - started >= 0.2
    answering.close()
    correcting.close()


def test_an_id_nobody_was_given_is_a_404_once_no_writer_can_still_hold_it(store, monkeypatch):
    import faceserve.feedback.feedback as module
    monkeypatch.setattr(module, "SETTLE_S", 0.3)
    feedback = Feedback(store)
    service = FeedbackService(OneFeedback(feedback))
    fresh = feedback.remember(ALICE.principal, ANSWER)
    nobodys = fresh[:-1] + ("0" if fresh[-1] != "0" else "1")  # made in the same millisecond, never given
    lookups = []
    correct = feedback.correct
    monkeypatch.setattr(feedback, "correct", lambda *args: lookups.append(args[1]) or correct(*args))
    with pytest.raises(FaceserveError) as unknown:
        asyncio.run(service.correct(ALICE, nobodys, 0, "emotion", "sad"))
    assert (unknown.value.status, unknown.value.code) == (404, "unknown_request")
    assert lookups.count(nobodys) > 1  # looked for again while another process could still hold it
    old_id = "0190aaaa-0000-7000-8000-000000000000"
    with pytest.raises(FaceserveError) as old:  # made long ago: no writer can hold it, answered at once
        asyncio.run(service.correct(ALICE, old_id, 0, "emotion", "sad"))
    assert old.value.code == "unknown_request" and lookups.count(old_id) == 1
    feedback.close()


def test_a_jobs_answer_is_written_before_the_service_returns_it(store):
    feedback = Feedback(store, group_window_s=60)
    service = FeedbackService(OneFeedback(feedback))
    queued = asyncio.run(service.remember(ALICE.principal, ANSWER))
    assert feedback.writer.holds(queued) and stored_ids(store) == []  # a request's answer: queued only
    written = asyncio.run(service.remember(ALICE.principal, ANSWER, written=True))
    assert stored_ids(store) == [queued, written]  # in queue order, the earlier one with it
    feedback.close()
