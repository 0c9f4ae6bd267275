"""The per-process search index, kept in step with the store across processes and replicas.

Before a search the index reads the gallery's change counter, at most every `poll_interval_s` unless told
sooner: by this process's own writes, and on PostgreSQL by LISTEN/NOTIFY. If the counter moved it loads
the faces added since (their `version` column) and drops the faces removed since (`gallery_removed_faces`);
an index too far behind, or a store whose counter went back (a restored backup), reloads in full.

Below `exact_below` faces the whole gallery is one exact matrix (`similarity.py`); from there on it is a saved
approximate index (`ann.py`) tagged with the change it reflects, the faces added since in an exact matrix beside
it and the faces removed since masked out of its answers. A worker starting over a store whose saved index is at
most REMOVALS_KEPT changes behind opens it memory-mapped and reads only those changes. A new saved index (none
usable: absent, of another store, from a counter the store went back before, damaged; or the changes beside the
last one past `rebuild_after`) is built in a thread of its own, one at a time per process, while searches go on
as before: exactly over every face the current saved index does not hold (the whole gallery if there is none),
its removed faces masked. The build reflects the change it started at; once saved it replaces the current one in
one step and the changes since are read then. One process of a machine builds at a time (a file lock): the
others' builds wait for it, then open what it saved. A build that fails is logged and tried again later (after `build_retry_s`,
doubling); `close` stops a running one.

`build_now` makes the saved index of the store's current change in the calling thread, before any worker opens the
gallery (`python -m faceserve gallery index`): its faces read a page at a time, never the whole gallery as one
float32 matrix, under the same file lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from faceserve.errors import StoreUnavailable
from faceserve.gallery.records import EmbeddingModel, Match
from faceserve.gallery.migrations import REMOVALS_KEPT, TOPIC
from faceserve.gallery import ann
from faceserve.gallery.similarity import SimilarityIndex, normalise
from faceserve.store import Store, Transaction

log = logging.getLogger(__name__)

FACES = ("SELECT f.id, f.identity_id, i.name, f.vector FROM gallery_faces f "
         "JOIN gallery_identities i ON i.id = f.identity_id "
         "WHERE f.model_name = ? AND f.model_version = ? AND f.dimension = ? AND f.version > ? AND f.version <= ?")
REMOVED = "SELECT face_id FROM gallery_removed_faces WHERE version > ? AND version <= ?"
COUNT = "SELECT COUNT(*) FROM gallery_faces WHERE model_name = ? AND model_version = ? AND dimension = ?"
SIZE = ("SELECT COUNT(*), COUNT(DISTINCT identity_id) FROM gallery_faces "
        "WHERE model_name = ? AND model_version = ? AND dimension = ?")
PAGE = FACES + " AND f.id > ? ORDER BY f.id LIMIT ?"
# A whole gallery's pages walk the primary key: through the model's index (whose condition every face meets)
# each page sorted every face anew, 1.9 s a page at 1 M faces on SQLite; `|| ''` keeps that index out.
WHOLE_PAGE = PAGE.replace("f.model_name = ?", "f.model_name || '' = ?")
# The store's creation time: a saved index follows this store, not another one that reached the same counter.
BIRTH = "SELECT applied_at FROM store_migrations WHERE component = 'store' AND version = 1"

# Where exact search over the whole gallery stops being faster than the approximate index beside its changes,
# in faces (benchmarks/search.py measured it: docs/identity.md).
EXACT_BELOW = 5_000
# A failed build is tried again after this many seconds, doubling with each failure in a row up to the most.
BUILD_RETRY_S, MAX_BUILD_RETRY_S = 60.0, 3600.0


def default_index_dir(store: Store) -> Path:
    """Where saved indexes live unless configured (FACESERVE_INDEX_DIR): a folder beside the SQLite file, else
    (PostgreSQL) one under the temporary directory, named after the store: the workers of one machine share it."""
    path = getattr(store, "path", None)
    if path is not None:
        return Path(path).with_name(Path(path).name + ".index")
    return Path(tempfile.gettempdir()) / f"faceserve-index-{hashlib.sha256(store.description.encode()).hexdigest()[:16]}"


class _State:
    """What a search reads, published as one object: the saved index (None: exact only), its rows removed
    since its tag, and the exact matrix (the whole gallery, or the faces added since the tag)."""

    __slots__ = ("saved", "dead", "exact")

    def __init__(self, saved: ann.SavedIndex | None, dead: np.ndarray, exact: SimilarityIndex):
        self.saved, self.dead, self.exact = saved, dead, exact


class BuildCancelled(Exception):
    """A build stopped before its end: the index is closing, or what it was built for was replaced."""


class BuildBusy(TimeoutError):
    """Another process of the machine still held the build lock when `build_now` stopped waiting for it."""


# What `build_now` did: saved the index, kept the one saved at the current change, or built none (exact search).
BUILT, CURRENT, EXACT = "built", "current", "exact"


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """`build_now`'s answer: `outcome`, the change the index reflects (EXACT: the store's change counter), the faces
    and identities it holds (EXACT: the model's faces in the store), its folder (EXACT: None)."""

    outcome: str
    version: int
    faces: int
    identities: int
    folder: Path | None


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a background build makes: the store's faces at change `version`, from `base` (less its `dead` rows)
    and the faces added since its tag, or from every face (`base` None); `epoch`: the full load it follows."""

    version: int
    epoch: int
    base: ann.SavedIndex | None = None
    dead: np.ndarray | None = None


class GalleryIndex:
    def __init__(self, store: Store, model: EmbeddingModel, *, poll_interval_s: float = 0.1,
                 index_dir: Path | None = None, exact_below: int = EXACT_BELOW, rebuild_after: int | None = None,
                 build_retry_s: float = BUILD_RETRY_S):
        self.store, self.model, self.poll_interval_s = store, model, poll_interval_s
        self.folder = (index_dir or default_index_dir(store)) / f"{model.name}-{model.version}-{model.dimension}"
        self.exact_below = exact_below
        self.rebuild_after = rebuild_after or exact_below  # changes beside the saved index: exact search's bound
        self.build_retry_s = build_retry_s
        self._state = _State(None, np.zeros(0, bool), SimilarityIndex(model.dimension))
        self._version: int | None = None  # the change the matrix reflects; None: never loaded
        self._epoch = 0  # full loads so far: a build planned before the last one is not swapped in
        self._checked_at = -float("inf")
        self._stale = True
        self._lock = threading.Lock()
        self._failing = False
        self._builder: threading.Thread | None = None  # the background build (the last one), at most one runs
        self._build_failures = 0
        self._retry_at = -float("inf")
        self._closing = threading.Event()
        store.subscribe(TOPIC, self.mark_stale)

    @property
    def version(self) -> int | None:
        return self._version

    def __len__(self) -> int:
        """Live faces."""
        state = self._state
        saved = state.saved.faces - int(state.dead.sum()) if state.saved is not None else 0
        return saved + len(state.exact)

    @property
    def saved(self) -> ann.SavedIndex | None:
        """The saved index searched now (None: exact search only)."""
        return self._state.saved

    @property
    def building(self) -> bool:
        """Whether a build runs in the background now."""
        builder = self._builder
        return builder is not None and builder.is_alive()

    def _another_build_runs(self) -> bool:
        """A build runs, other than the calling thread (a build ending may start the next one)."""
        return self.building and self._builder is not threading.current_thread()

    def mark_stale(self) -> None:
        """Something changed: the next search reads the store first."""
        self._stale = True

    def wait_for_build(self, timeout_s: float | None = None) -> bool:
        """Wait until no build runs (the one running and any it chained, swapped in or not); False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (builder := self._builder) is not None and builder.is_alive():
            builder.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if builder.is_alive():
                return False
        return True

    def close(self, wait_s: float = 30.0) -> None:
        """Stop the build running in the background, if any (its temporary folder removed), waiting up to `wait_s`
        for it to end, and start none again; searches go on with what is loaded."""
        self._closing.set()
        if not self.wait_for_build(wait_s) and wait_s > 0:
            log.warning("gallery index: the build still runs %.0f s after being stopped", wait_s)

    def _due(self) -> bool:
        return self._stale or time.monotonic() - self._checked_at >= self.poll_interval_s

    def sync(self) -> None:
        """Follow the store now if a change may have happened. A search that is only due for a poll while
        another thread reads the store does not wait for it. If the store cannot be reached, the last loaded
        matrix keeps answering (logged once per outage); with none loaded yet, StoreUnavailable."""
        if not self._due():
            return
        if not self._lock.acquire(blocking=self._stale or self._version is None):
            return
        try:
            if not self._due():
                return  # another thread just did
            self._stale = False  # before reading: a change announced meanwhile is read next time
            started = time.monotonic()
            try:
                with self.store.read() as tx:
                    self._follow(tx)
            except StoreUnavailable as exc:
                if self._version is None:
                    raise
                if not self._failing:
                    log.warning("gallery index: searching the faces known at change %d until the store is back: %s",
                                self._version, exc.message)
                self._failing = True
            else:
                if self._failing:
                    log.info("gallery index: following the store again (change %d)", self._version)
                self._failing = False
            finally:
                self._checked_at = started
        finally:
            self._lock.release()

    def _follow(self, tx: Transaction) -> None:
        current = _counter(tx)
        last = self._version
        if last is None or current < last or current - last > REMOVALS_KEPT:
            self._load(tx, current)
            return
        if current != last:
            self._apply(self._state, self._changes(tx, last, current))
            self._version = current
        elif not (self._build_failures and time.monotonic() >= self._retry_at):
            return
        self._rebalance(tx, current)

    @property
    def _model(self) -> tuple[str, str, int]:
        return self.model.name, self.model.version, self.model.dimension

    def _changes(self, tx: Transaction, last: int, current: int) -> tuple[list, list[str]]:
        return (self._decode(tx.all(FACES, (*self._model, last, current))),
                [face_id for (face_id,) in tx.all(REMOVED, (last, current))])

    @staticmethod
    def _apply(state: _State, changes: tuple[list, list[str]]) -> None:
        added, removed = changes
        if state.saved is not None and removed:
            dead = state.dead.copy()
            dead[state.saved.rows_of(removed)] = True
            state.dead = dead
        state.exact.update(added, removed)

    def _load(self, tx: Transaction, current: int) -> None:
        """Everything afresh at `current`: a saved index and the changes since, else the faces from the store
        (and, from `exact_below` faces on, a saved index built in the background)."""
        self._epoch += 1
        (faces,) = tx.one(COUNT, self._model)
        saved = None
        if faces >= self.exact_below:
            saved = ann.newest(self.folder, self._birth(tx), self._model, current, REMOVALS_KEPT)
        if saved is not None:
            self._start_from(tx, saved, current)
        else:
            exact = SimilarityIndex(self.model.dimension)
            exact.replace(self._decode(tx.all(FACES, (*self._model, -1, current))))
            self._state = _State(None, np.zeros(0, bool), exact)
        self._version = current
        if saved is None and faces >= self.exact_below:
            self._start_build(current)

    def _start_from(self, tx: Transaction, saved: ann.SavedIndex, current: int) -> None:
        state = _State(saved, np.zeros(len(saved), bool), SimilarityIndex(self.model.dimension))
        self._apply(state, self._changes(tx, saved.tag.version, current))
        self._state = state
        log.info("gallery index: saved index of change %d (%d faces) and %d faces since, at change %d",
                 saved.tag.version, saved.faces, len(state.exact), current)

    def _rebalance(self, tx: Transaction, current: int) -> None:
        """A gallery that grew past exact search gets a saved index; one whose changes beside its saved index
        grew past `rebuild_after` a new one (both built in the background); one that shrank far below the bound
        goes back to exact search."""
        state = self._state
        if state.saved is None:
            if len(state.exact) >= self.exact_below:
                self._start_build(current)
        elif len(state.exact) + int(state.dead.sum()) > self.rebuild_after:
            self._start_build(current, state)
        elif len(self) < self.exact_below // 2:
            self._load(tx, current)

    # ---- the background build (its thread holds `_lock` only to plan and to swap) ------------------------

    def _start_build(self, current: int, state: _State | None = None) -> None:
        """Under `_lock`: build the index of change `current` in the background, unless a build runs, the last
        one failed less than its retry delay ago, or the index is closing."""
        if self._another_build_runs() or self._closing.is_set() or time.monotonic() < self._retry_at:
            return
        plan = _Plan(current, self._epoch, *((state.saved, np.flatnonzero(state.dead)) if state else ()))
        self._builder = threading.Thread(target=self._build, args=(plan,), name="gallery-index-build", daemon=True)
        self._builder.start()

    def _build(self, plan: _Plan) -> None:
        started = time.monotonic()
        try:
            saved = self._build_locked(plan)
        except BuildCancelled:
            log.info("gallery index: the build of change %d stopped (%s)", plan.version,
                     "closing" if self._closing.is_set() else "the gallery was reloaded")
            saved = None
        except Exception as exc:
            with self._lock:
                self._build_failures += 1
                retry_s = min(self.build_retry_s * 2 ** (self._build_failures - 1), MAX_BUILD_RETRY_S)
                self._retry_at = time.monotonic() + retry_s
            if isinstance(exc, OSError):
                log.warning("gallery index: cannot save an index in %s (%s); searching exactly, tried again in %.0f "
                            "s (set %s to a writable folder)", self.folder, exc, retry_s, "FACESERVE_INDEX_DIR")
            else:
                log.exception("gallery index: building the index of change %d failed; searching exactly, tried "
                              "again in %.0f s", plan.version, retry_s)
            return
        else:
            log.info("gallery index: built the index of change %d (%d faces) in %.1f s", plan.version, saved.faces,
                     time.monotonic() - started)
        self._swap(saved, plan)

    def _build_locked(self, plan: _Plan) -> ann.SavedIndex:
        """The index `plan` asks for, or one another process saved meanwhile (one of the plan's change or later;
        with no base, any the store can catch up from); one process of the machine builds at a time."""
        with self._build_lock(lambda: self._check(plan)):
            with self.store.read() as tx:
                birth, now = self._birth(tx), _counter(tx)
            saved = ann.newest(self.folder, birth, self._model, now,
                               REMOVALS_KEPT if plan.base is None else now - plan.version)
            if saved is None:
                tag, base = ann.Tag(birth, self._model, plan.version), plan.base
                if base is not None and (base.folder / ann.GRAPH).exists() and \
                        2 * (len(base) - base.faces + len(plan.dead)) < len(base):
                    faces = self._stream(plan, after_version=base.tag.version)
                    saved = ann.build(self.folder, tag, faces, self.model.dimension, base=base, removed_rows=plan.dead)
                else:
                    saved = ann.build(self.folder, tag, self._stream(plan), self.model.dimension)
            ann.prune(self.folder, keep=saved)
        return saved

    @contextlib.contextmanager
    def _build_lock(self, check: Callable[[], None]) -> Iterator[None]:
        """The machine's one build at a time: a file lock in the index folder, waited for; `check()` is called
        while waiting and raises to stop."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:
            while True:
                check()
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self._closing.wait(0.1)
            yield

    def build_now(self, *, force: bool = False, wait_s: float | None = None) -> BuildResult:
        """The saved index of the store's current change, in this thread: kept (CURRENT) if one at that change is
        saved, else built and saved (BUILT; the older ones pruned), its faces read a page at a time. Below
        `exact_below` faces (where workers search exactly) none is built (EXACT) unless `force`; a gallery without
        faces never. Waits up to `wait_s` (None: as long as it takes) for another build of the machine, then
        BuildBusy; if that build saved the current change, it is kept. This process's search is not changed."""
        with self.store.read() as tx:
            birth, current = self._birth(tx), _counter(tx)
            faces, identities = tx.one(SIZE, self._model)
        kept = ann.newest(self.folder, birth, self._model, current, 0)
        if kept is not None:
            return _result(CURRENT, kept)
        if faces == 0 or (faces < self.exact_below and not force):
            return BuildResult(EXACT, current, faces, identities, None)
        deadline = None if wait_s is None else time.monotonic() + wait_s

        def check() -> None:
            if self._closing.is_set():
                raise BuildCancelled()
            if deadline is not None and time.monotonic() >= deadline:
                raise BuildBusy(f"another process still builds the index in {self.folder} after {wait_s:g} s")
        with self._build_lock(check):
            with self.store.read() as tx:
                birth, current = self._birth(tx), _counter(tx)
            saved = ann.newest(self.folder, birth, self._model, current, 0)
            outcome = CURRENT  # the build waited for saved it
            if saved is None:
                plan = _Plan(current, self._epoch)
                saved = ann.build(self.folder, ann.Tag(birth, self._model, current), self._stream(plan),
                                  self.model.dimension)
                outcome = BUILT
            ann.prune(self.folder, keep=saved)
        return _result(outcome, saved)

    def _swap(self, saved: ann.SavedIndex | None, plan: _Plan) -> None:
        """Search `saved` from now on, with the changes since its tag read now, if it still follows the gallery
        as loaded; then start the next build if the gallery already needs one (changes during this one)."""
        with self._lock:
            if saved is not None:
                self._build_failures, self._retry_at = 0, -float("inf")
            if self._closing.is_set():
                return
            try:
                with self.store.read() as tx:
                    current = _counter(tx)
                    if saved is not None:
                        if plan.epoch == self._epoch and self._version is not None and \
                                saved.tag.version <= current and self._version <= current and \
                                current - saved.tag.version <= REMOVALS_KEPT and saved.tag.store == self._birth(tx):
                            self._start_from(tx, saved, current)
                            self._version = current
                        else:
                            log.info("gallery index: the index of change %d is not searched: the gallery was "
                                     "reloaded meanwhile", saved.tag.version)
                    if current == self._version:
                        self._rebalance(tx, current)
                    else:
                        self._stale = True
            except StoreUnavailable as exc:
                self._stale = True  # the next load finds it saved
                log.warning("gallery index: the index of change %d is saved but not searched yet: %s",
                            plan.version, exc.message)

    def _check(self, plan: _Plan) -> None:
        if self._closing.is_set() or plan.epoch != self._epoch:
            raise BuildCancelled()

    def _stream(self, plan: _Plan, page: int = 1000, after_version: int = -1):
        """The faces at the plan's change added after change `after_version`, unit vectors, a page at a time,
        each page read in a short transaction of its own (a face removed meanwhile may or may not be among them:
        its removal comes after the plan's change, so it is masked after the swap either way)."""
        after = ""
        while True:
            self._check(plan)
            with self.store.read() as tx:
                rows = tx.all(PAGE if after_version >= 0 else WHOLE_PAGE,
                              (*self._model, after_version, plan.version, after, page))
            if not rows:
                return
            decoded = self._decode(rows)
            units = normalise(np.stack([face[3] for face in decoded]))
            for face, unit in zip(decoded, units):
                if np.all(np.isfinite(unit)):  # as the exact matrix: a vector without a unit vector never matches
                    yield (*face[:3], unit)
            after = rows[-1][0]

    @staticmethod
    def _birth(tx: Transaction) -> str:
        row = tx.one(BIRTH)
        return str(row[0]) if row else ""

    def _decode(self, rows: list[tuple]) -> list[tuple[str, str, str, np.ndarray]]:
        return [(face_id, identity_id, name, np.frombuffer(vector, dtype="<f4"))
                for face_id, identity_id, name, vector in rows]

    def search(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        self.sync()
        state = self._state
        if state.saved is None:
            return state.exact.search(queries, k)
        return [_merged(state.saved, found, added, k) for found, added in
                zip(_search_saved(state.saved, state.dead, normalise(queries), k), state.exact.search(queries, k))]


def _result(outcome: str, saved: ann.SavedIndex) -> BuildResult:
    return BuildResult(outcome, saved.tag.version, saved.faces, len(saved.identity_ids), saved.folder)


def _counter(tx: Transaction) -> int:
    row = tx.one("SELECT version FROM store_changes WHERE topic = ?", (TOPIC,))
    return row[0] if row else 0


def _search_saved(saved: ann.SavedIndex, dead: np.ndarray, queries: np.ndarray, k: int) -> list[dict[int, float]]:
    """For each unit query, up to `k` identity codes of the saved index with their best live face's similarity:
    the graph's nearest faces, asked for more while removed faces and an identity's other faces leave fewer than
    `k` identities."""
    found = []
    for query in queries:
        count = 4 * k + 16
        while True:
            rows, similarities = saved.search(query[None, :], count)
            rows, similarities = rows[0], similarities[0]
            live = rows >= 0
            live[live] = ~dead[rows[live]]
            best: dict[int, float] = {}
            for code, similarity in zip(saved.owners[rows[live]], similarities[live]):
                best.setdefault(int(code), float(similarity))  # nearest first: the first is the best
            if len(best) >= k or count >= saved.faces:
                break
            count *= 4
        found.append(best)
    return found


def _merged(saved: ann.SavedIndex, found: dict[int, float], added: list[Match], k: int) -> list[Match]:
    """The best `k` identities of both halves, each at its best face (an identity may have faces in both)."""
    best = {identity_id: Match(identity_id, name, float(np.clip(similarity, -1.0, 1.0)))
            for identity_id, name, similarity in ((*saved.identity(code), similarity)
                                                  for code, similarity in found.items())}
    for match in added:
        if match.identity_id not in best or match.similarity > best[match.identity_id].similarity:
            best[match.identity_id] = match
    return sorted(best.values(), key=lambda match: (-match.similarity, match.identity_id))[:k]
