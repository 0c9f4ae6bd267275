"""The per-process search index, kept in step with the store across processes and replicas.

Before a search the index reads the gallery's change counter, at most every `poll_interval_s` unless told
sooner: by this process's own writes, and on PostgreSQL by LISTEN/NOTIFY. If the counter moved it loads
the faces added since (their `version` column) and drops the faces removed since (`gallery_removed_faces`);
an index too far behind, or a store whose counter went back (a restored backup), reloads in full.

Below `exact_below` faces the whole gallery is one exact matrix (`similarity.py`); from there on it is a saved
approximate index (`ann.py`) tagged with the change it reflects, the faces added since in an exact matrix beside
it and the faces removed since masked out of its answers. A worker starting over a store whose saved index is at
most REMOVALS_KEPT changes behind opens it memory-mapped and reads only those changes; with none usable (absent,
of another store, from a counter the store went back before, damaged) one worker builds and saves a new one under
a file lock while the others wait for it. When the changes beside it pass `rebuild_after`, a new one is built.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import tempfile
import threading
import time
from pathlib import Path

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
PAGE = FACES + " AND f.id > ? ORDER BY f.id LIMIT ?"
# The store's creation time: a saved index follows this store, not another one that reached the same counter.
BIRTH = "SELECT applied_at FROM store_migrations WHERE component = 'store' AND version = 1"

# Where exact search over the whole gallery stops being faster than the approximate index beside its changes,
# in faces (benchmarks/search.py measured it: docs/identity.md).
EXACT_BELOW = 5_000


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


class GalleryIndex:
    def __init__(self, store: Store, model: EmbeddingModel, *, poll_interval_s: float = 0.1,
                 index_dir: Path | None = None, exact_below: int = EXACT_BELOW, rebuild_after: int | None = None):
        self.store, self.model, self.poll_interval_s = store, model, poll_interval_s
        self.folder = (index_dir or default_index_dir(store)) / f"{model.name}-{model.version}-{model.dimension}"
        self.exact_below = exact_below
        self.rebuild_after = rebuild_after or exact_below  # changes beside the saved index: exact search's bound
        self._state = _State(None, np.zeros(0, bool), SimilarityIndex(model.dimension))
        self._unwritable = False  # the index folder refused a write: exact search until a restart
        self._version: int | None = None  # the change the matrix reflects; None: never loaded
        self._checked_at = -float("inf")
        self._stale = True
        self._lock = threading.Lock()
        self._failing = False
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

    def mark_stale(self) -> None:
        """Something changed: the next search reads the store first."""
        self._stale = True

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
        row = tx.one("SELECT version FROM store_changes WHERE topic = ?", (TOPIC,))
        current = row[0] if row else 0
        last = self._version
        if current == last:
            return
        if last is None or current < last or current - last > REMOVALS_KEPT:
            self._load(tx, current)
        else:
            self._apply(self._state, self._changes(tx, last, current))
            self._version = current
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
        """Everything afresh at `current`: a saved index and the changes since, else the faces from the store."""
        (faces,) = tx.one(COUNT, self._model)
        saved = None
        if faces >= self.exact_below and not self._unwritable:
            saved = ann.newest(self.folder, self._birth(tx), self._model, current, REMOVALS_KEPT)
            if saved is None:
                saved = self._build(tx, current)
        if saved is not None:
            self._start_from(tx, saved, current)
        else:
            exact = SimilarityIndex(self.model.dimension)
            exact.replace(self._decode(tx.all(FACES, (*self._model, -1, current))))
            self._state = _State(None, np.zeros(0, bool), exact)
        self._version = current

    def _start_from(self, tx: Transaction, saved: ann.SavedIndex, current: int) -> None:
        state = _State(saved, np.zeros(len(saved), bool), SimilarityIndex(self.model.dimension))
        self._apply(state, self._changes(tx, saved.tag.version, current))
        self._state = state
        log.info("gallery index: saved index of change %d (%d faces) and %d faces since, at change %d",
                 saved.tag.version, saved.faces, len(state.exact), current)

    def _rebalance(self, tx: Transaction, current: int) -> None:
        """A gallery that grew past exact search gets a saved index; one whose changes beside its saved index
        grew past `rebuild_after` a new one; one that shrank far below the bound goes back to exact search."""
        state = self._state
        if state.saved is None:
            if len(state.exact) >= self.exact_below and not self._unwritable:
                self._load(tx, current)
        elif len(state.exact) + int(state.dead.sum()) > self.rebuild_after and not self._unwritable:
            rebuilt = self._build(tx, current, state)
            if rebuilt is not None:
                self._start_from(tx, rebuilt, current)
        elif len(self) < self.exact_below // 2:
            self._load(tx, current)

    def _build(self, tx: Transaction, current: int, state: _State | None = None) -> ann.SavedIndex | None:
        """A saved index of the store's faces at `current` (or one another process saved meanwhile), built by one
        process of the machine at a time: from `state`'s saved index and the changes since, unless rows removed
        from it would be the most of it; else from every face in the store. None, logged, where the folder cannot
        be written: this process then keeps to exact search (or to the changes beside its last saved index)."""
        try:
            return self._build_locked(tx, current, state)
        except OSError as exc:
            log.warning("gallery index: cannot save an index in %s (%s); searching exactly (set %s to a writable "
                        "folder)", self.folder, exc, "FACESERVE_INDEX_DIR")
            self._unwritable = True
            return None

    def _build_locked(self, tx: Transaction, current: int, state: _State | None) -> ann.SavedIndex:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            birth = self._birth(tx)
            saved = ann.newest(self.folder, birth, self._model, current, 0)
            if saved is None:
                started = time.monotonic()
                tag, base = ann.Tag(birth, self._model, current), state.saved if state is not None else None
                if base is not None and 2 * (len(base) - base.faces + int(state.dead.sum())) < len(base):
                    saved = ann.build(self.folder, tag, self._stream(tx, current, after_version=base.tag.version),
                                      self.model.dimension, base=base, removed_rows=np.flatnonzero(state.dead))
                else:
                    saved = ann.build(self.folder, tag, self._stream(tx, current), self.model.dimension)
                log.info("gallery index: built the saved index of change %d (%d faces) in %.1f s",
                         current, saved.faces, time.monotonic() - started)
            ann.prune(self.folder, keep=saved)
        return saved

    def _stream(self, tx: Transaction, current: int, page: int = 5000, after_version: int = -1):
        """The faces at `current` added after change `after_version`, unit vectors, a page at a time (never the
        whole gallery's rows at once)."""
        after = ""
        while rows := tx.all(PAGE, (*self._model, after_version, current, after, page)):
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
