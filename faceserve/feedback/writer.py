"""Remembered answers written off the request's path: a bounded queue, emptied by one thread per process in group
commits (one transaction, hence one commit's fsync, for every answer queued while the last group was written).

What a process can lose: a clean stop (`close`) writes everything queued first; a `kill -9` (or a power cut) loses
exactly the answers still queued, at most `capacity` of them, in practice those answered within the last group's
window and commit. Their request ids were answered but are unknown to `/feedback` afterwards (a 404).

A full queue makes the request wait for room (the writer frees a group's worth of places at each commit) rather
than write its answer itself: an inline write would take the store's write lock beside the writer's, one commit per
answer exactly when commits are what is short, and would break the order that makes a kill's loss the queue's
tail. While the writer cannot reach the store, a full queue refuses at once instead (`StoreUnavailable`: the request
is answered with no request id and the loss is logged, as when the store cannot be reached at all).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from typing import Callable, Generic, Hashable, TypeVar

from faceserve.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass
class _Queued(Generic[T]):
    key: Hashable
    item: T
    size: int
    seq: int
    at: float


class GroupWriter(Generic[T]):
    """Items queued by any thread, handed to `write` (one call: one transaction) in groups, in queue order, by one
    thread of its own.

    `write` raising `StoreUnavailable` keeps the group queued and tries it again every `retry_s`; any other
    exception has each item of the group written alone, and an item that still fails is logged and dropped.
    """

    def __init__(self, write: Callable[[list[T]], None], *, name: str, capacity: int = 2000,
                 capacity_bytes: int = 64 * 2**20, max_group: int = 500, window_s: float = 0.0,
                 wait_s: float = 10.0, retry_s: float = 1.0):
        """`capacity`, `capacity_bytes`: the queue's bound in items and in their declared sizes; `window_s`: how
        long the oldest item may wait for others to join its group (0: a group is whatever queued while the last
        one was written); `wait_s`: how long a full queue makes `put` wait for room."""
        self._write, self.name = write, name
        self.capacity, self.capacity_bytes, self.max_group = capacity, capacity_bytes, max_group
        self.window_s, self.wait_s, self.retry_s = window_s, wait_s, retry_s
        self._cond = threading.Condition()
        self._queue: collections.deque[_Queued[T]] = collections.deque()
        self._keys: dict[Hashable, int] = {}  # key -> seq of every queued item (the group being written included)
        self._bytes = 0
        self._seq = itertools.count(1)
        self._settled = 0  # every item up to this seq is written (or dropped and logged)
        self._flushing = 0  # threads waiting in `flush`: the writer does not wait out its window for them
        self._failing = False
        self._closing_at: float | None = None  # the deadline of a stop's drain
        self._thread: threading.Thread | None = None  # started by the first `put`: a reader never has one

    # ---- the request's side ------------------------------------------------

    def put(self, key: Hashable, item: T, size: int = 0, *, block: bool = True) -> bool:
        """Queue `item` (known by `key` to `holds` and `flush`); False only when not `block` and the queue is full.
        Raises `StoreUnavailable` when stopped, or when the queue stays full (`wait_s`; at once while the writer
        cannot reach the store)."""
        with self._cond:
            deadline = time.monotonic() + self.wait_s
            while True:
                if self._closing_at is not None:
                    raise StoreUnavailable(f"{self.name} is stopping: the answer is not remembered")
                if not self._full(size):
                    break
                if not block:
                    return False
                remaining = deadline - time.monotonic()
                if self._failing or remaining <= 0:
                    raise StoreUnavailable(f"{self.name} holds {len(self._queue)} items it has not yet written "
                                           f"({'the store cannot be reached' if self._failing else 'it is behind'})")
                self._cond.wait(remaining)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            seq = next(self._seq)
            self._queue.append(_Queued(key, item, size, seq, time.monotonic()))
            self._keys[key] = seq
            self._bytes += size
            self._cond.notify_all()
        return True

    def _full(self, size: int) -> bool:
        # An item larger than the byte bound still goes into an empty queue: it is refused nowhere else.
        return len(self._queue) >= self.capacity or (self._queue and self._bytes + size > self.capacity_bytes)

    def holds(self, key: Hashable) -> bool:
        """Whether the item `key` is queued, not yet written."""
        with self._cond:
            return key in self._keys

    def flush(self, key: Hashable | None = None, timeout_s: float | None = None) -> bool:
        """Wait until item `key` (None: every item queued now) is written; whether it was within `timeout_s`."""
        with self._cond:
            target = self._keys.get(key, 0) if key is not None else (self._queue[-1].seq if self._queue else 0)
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._settled >= target, timeout_s)
            finally:
                self._flushing -= 1

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking items and write every queued one; what cannot be written within `timeout_s` (the store
        unreachable throughout) is logged as lost."""
        with self._cond:
            if self._closing_at is None:
                self._closing_at = time.monotonic() + timeout_s
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s + self.retry_s + 5)

    # ---- the writer's thread -----------------------------------------------

    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            self._write_group(group)

    def _next_group(self) -> list[_Queued[T]] | None:
        """The next group, left queued until it is written; None once stopped and empty."""
        with self._cond:
            while True:
                if not self._queue:
                    if self._closing_at is not None:
                        return None
                    self._cond.wait()
                    continue
                linger = self._queue[0].at + self.window_s - time.monotonic()
                if (linger <= 0 or len(self._queue) >= self.max_group or self._flushing
                        or self._closing_at is not None):
                    return list(itertools.islice(self._queue, self.max_group))
                self._cond.wait(linger)

    def _write_group(self, group: list[_Queued[T]]) -> None:
        while True:
            try:
                self._write([queued.item for queued in group])
                written = group
                break
            except StoreUnavailable as exc:
                if self._give_up(group, exc):
                    written = group
                    break
            except Exception:
                log.exception("%s: a group of %d could not be written; writing each alone", self.name, len(group))
                written = self._write_each(group)
                if len(written) == len(group):
                    break
                group = group[len(written):]  # the store went away half-way: the rest waits for it
                self._settle(written)
        with self._cond:
            self._failing = False
        self._settle(written)

    def _write_each(self, group: list[_Queued[T]]) -> list[_Queued[T]]:
        """Each item written alone, in order, until the store cannot be reached; those settled (written, or
        failing on their own: logged and dropped)."""
        settled = []
        for queued in group:
            try:
                self._write([queued.item])
            except StoreUnavailable:
                return settled
            except Exception:
                log.exception("%s: %r not written: dropped", self.name, queued.key)
            settled.append(queued)
        return settled

    def _give_up(self, group: list[_Queued[T]], exc: StoreUnavailable) -> bool:
        """After a failed write: wait `retry_s` and say to try again, or, when a stop's drain is past its deadline,
        log everything queued as lost and say to give up on this group (the next ones fail as fast)."""
        with self._cond:
            self._failing = True
            self._cond.notify_all()  # those waiting for room are refused now
            if self._closing_at is not None and time.monotonic() >= self._closing_at:
                log.error("%s: stopping with the store unreachable (%s): %d items not written: %s", self.name,
                          exc.message, len(group), ", ".join(str(queued.key) for queued in group))
                return True
            log.warning("%s: %d items wait for the store: %s", self.name, len(self._queue), exc.message)
            self._cond.wait(self.retry_s)
        return False

    def _settle(self, done: list[_Queued[T]]) -> None:
        if not done:
            return
        with self._cond:
            for queued in done:
                self._queue.popleft()
                self._bytes -= queued.size
                if self._keys.get(queued.key) == queued.seq:
                    del self._keys[queued.key]
            self._settled = done[-1].seq
            self._cond.notify_all()
