"""Exact cosine search over an in-memory matrix of L2-normalised float32 embeddings (no database here).

One writer (the index following the store, under its lock) and any number of concurrent readers: a search
works on the snapshot it started with. Appends fill rows past every published snapshot's end; a removal
zeroes its row and marks it dead in place (a search running at that moment may or may not see the face,
as it would had it started a moment earlier or later); rows are never reused, and compaction builds new
arrays, so no reader ever sees one face's vector under another identity.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from faceserve.gallery.records import Match

DEAD = -1


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    vectors: np.ndarray  # (rows, dimension), a view of the buffer
    owners: np.ndarray  # (rows,) identity code of each row, DEAD for a removed face
    identity_ids: list[str]  # by code; append-only between compactions
    names: list[str]


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit rows in float32, as the matrix holds them; a row without one (zero, underflowing) comes out NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


class SimilarityIndex:
    """Faces (face id, identity id, identity name, vector); `search` ranks identities by their best face."""

    def __init__(self, dimension: int):
        self.dimension = dimension
        self._reset(capacity=0)
        self._publish()

    def _reset(self, capacity: int) -> None:
        """Empty arrays for the writer; readers keep the published snapshot until the next `_publish`."""
        self._buffer = np.zeros((capacity, self.dimension), np.float32)
        self._owners = np.full(capacity, DEAD, np.int32)
        self._rows = 0
        self._row_of: dict[str, int] = {}
        self._code_of: dict[str, int] = {}
        self._identity_ids: list[str] = []
        self._names: list[str] = []

    def _publish(self) -> None:
        self._snapshot = _Snapshot(self._buffer[:self._rows], self._owners[:self._rows], self._identity_ids,
                                   self._names)

    def __len__(self) -> int:
        """Live faces."""
        return len(self._row_of)

    # ---- the writer --------------------------------------------------------

    def replace(self, faces: Sequence[tuple[str, str, str, np.ndarray]]) -> None:
        """Hold exactly `faces`: (face id, identity id, name, vector)."""
        self._reset(capacity=max(len(faces), 64))
        self.update(faces, ())

    def update(self, added: Sequence[tuple[str, str, str, np.ndarray]], removed: Iterable[str]) -> None:
        for face_id in removed:
            row = self._row_of.pop(face_id, None)
            if row is not None:
                self._owners[row] = DEAD
                self._buffer[row] = 0.0  # a deleted face's vector does not stay in memory
        added = [face for face in added if face[0] not in self._row_of]
        units = normalise(np.stack([face[3] for face in added])) if added else np.zeros((0, self.dimension))
        # A vector that has no unit vector (zero, denormal, not finite: stored before validation checked it)
        # never enters the matrix, so it never matches and never spoils its identity's other faces.
        usable = np.all(np.isfinite(units), axis=1)
        added, units = [face for face, ok in zip(added, usable) if ok], units[usable]
        if self._rows - len(self._row_of) > max(1024, self._rows // 2):
            self._compact(extra=len(added))
        elif self._rows + len(added) > len(self._buffer):
            self._grow(max(2 * len(self._buffer), self._rows + len(added), 64))
        if added:
            start, stop = self._rows, self._rows + len(added)
            self._buffer[start:stop] = units
            for row, (face_id, identity_id, name, _) in enumerate(added, start):
                self._owners[row] = self._code(identity_id, name)
                self._row_of[face_id] = row
            self._rows = stop
        self._publish()

    def _code(self, identity_id: str, name: str) -> int:
        code = self._code_of.get(identity_id)
        if code is None:
            code = self._code_of[identity_id] = len(self._identity_ids)
            self._names.append(name)  # before the id: a reader holding the code finds both
            self._identity_ids.append(identity_id)
        return code

    def _grow(self, capacity: int) -> None:
        buffer = np.zeros((capacity, self.dimension), np.float32)
        buffer[:self._rows] = self._buffer[:self._rows]
        owners = np.full(capacity, DEAD, np.int32)
        owners[:self._rows] = self._owners[:self._rows]
        self._buffer, self._owners = buffer, owners

    def _compact(self, extra: int) -> None:
        live = sorted(self._row_of.items(), key=lambda item: item[1])
        old_buffer, old_owners, old_ids, old_names = self._buffer, self._owners, self._identity_ids, self._names
        self._reset(capacity=max(2 * (len(live) + extra), 64))
        for row, (face_id, old_row) in enumerate(live):
            code = old_owners[old_row]
            self._buffer[row] = old_buffer[old_row]
            self._owners[row] = self._code(old_ids[code], old_names[code])
            self._row_of[face_id] = row
        self._rows = len(live)

    # ---- readers -----------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        """For each row of `queries` (n, dimension), the top `k` identities, best first."""
        snapshot = self._snapshot
        queries = normalise(queries)
        identities = len(snapshot.identity_ids)
        if not len(snapshot.vectors) or k < 1:
            return [[] for _ in queries]
        similarities = queries @ snapshot.vectors.T  # (n, rows)
        owners = snapshot.owners.copy()  # rows may die while we search
        owners[owners == DEAD] = identities  # an extra column, dropped below
        best = np.full((identities + 1, len(queries)), -np.inf, np.float32)
        np.fmax.at(best, owners, similarities.T)  # fmax: a NaN similarity (a zero query) never wins
        best = best[:identities].T  # (n, identities): each identity's best face
        top = min(k, identities)
        candidates = np.argpartition(-best, top - 1, axis=1)[:, :top]
        results = []
        for scores, codes in zip(best, candidates):
            codes = codes[np.lexsort((codes, -scores[codes]))]
            results.append([Match(snapshot.identity_ids[c], snapshot.names[c], float(np.clip(scores[c], -1.0, 1.0)))
                            for c in codes if scores[c] > -np.inf])
        return results
