"""The per-process search index, kept in step with the store across processes and replicas.

Before a search the index reads the gallery's change counter, at most every `poll_interval_s` unless told
sooner: by this process's own writes, and on PostgreSQL by LISTEN/NOTIFY. If the counter moved it loads
the faces added since (their `version` column) and drops the faces removed since (`gallery_removed_faces`);
an index too far behind, or a store whose counter went back (a restored backup), reloads in full.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from faceserve.errors import StoreUnavailable
from faceserve.gallery.records import EmbeddingModel, Match
from faceserve.gallery.migrations import REMOVALS_KEPT, TOPIC
from faceserve.gallery.similarity import SimilarityIndex
from faceserve.store import Store, Transaction

log = logging.getLogger(__name__)

FACES = ("SELECT f.id, f.identity_id, i.name, f.vector FROM gallery_faces f "
         "JOIN gallery_identities i ON i.id = f.identity_id "
         "WHERE f.model_name = ? AND f.model_version = ? AND f.dimension = ? AND f.version > ? AND f.version <= ?")
REMOVED = "SELECT face_id FROM gallery_removed_faces WHERE version > ? AND version <= ?"


class GalleryIndex:
    def __init__(self, store: Store, model: EmbeddingModel, *, poll_interval_s: float = 0.1):
        self.store, self.model, self.poll_interval_s = store, model, poll_interval_s
        self._matrix = SimilarityIndex(model.dimension)
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
        return len(self._matrix)

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
        model = (self.model.name, self.model.version, self.model.dimension)
        if last is None or current < last or current - last > REMOVALS_KEPT:
            self._matrix.replace(self._decode(tx.all(FACES, (*model, -1, current))))
        else:
            self._matrix.update(self._decode(tx.all(FACES, (*model, last, current))),
                                [face_id for (face_id,) in tx.all(REMOVED, (last, current))])
        self._version = current

    def _decode(self, rows: list[tuple]) -> list[tuple[str, str, str, np.ndarray]]:
        return [(face_id, identity_id, name, np.frombuffer(vector, dtype="<f4"))
                for face_id, identity_id, name, vector in rows]

    def search(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        self.sync()
        return self._matrix.search(queries, k)
