"""The gallery's operations: identities and their faces in the store, search through the index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from faceserve.errors import FaceserveError, InvalidRequest, NotFound, StoreUnavailable
from faceserve.gallery import audit, transfer, validation
from faceserve.gallery.index import GalleryIndex
from faceserve.gallery.records import (AuditPage, EmbeddingModel, IdentityPage, IdentitySummary, ImportCounts, Match,
                                       NewFace, StoredFace, StoredIdentity, TransferCounts, frame_of,
                                       frame_values)
from faceserve.gallery.migrations import MIGRATIONS, REMOVALS_KEPT, TOPIC
from faceserve.http.caller import LOCAL, Caller
from faceserve.store import Store, Transaction, new_id, utc_now

DELETED_SLACK = 8  # matches searched beyond top k, for identities deleted that the index may still hold

MAX_PAGE = 1000

FACE_COLUMNS = ("f.id, f.identity_id, f.model_name, f.model_version, f.dimension, f.image_sha256, "
                "f.box_x1, f.box_y1, f.box_x2, f.box_y2, f.thumbnail IS NOT NULL, f.created_at, "
                "f.thumbnail_x1, f.thumbnail_y1, f.thumbnail_scale")
INSERT_FACE = ("INSERT INTO gallery_faces (id, identity_id, model_name, model_version, dimension, vector, "
               "image_sha256, box_x1, box_y1, box_x2, box_y2, thumbnail, thumbnail_x1, thumbnail_y1, "
               "thumbnail_scale, created_at, version) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING")
SAME_MODEL = "{0}.model_name = ? AND {0}.model_version = ? AND {0}.dimension = ?"
SAME_SOURCE = ("s.image_sha256 = f.image_sha256 AND s.box_x1 = f.box_x1 AND s.box_y1 = f.box_y1 AND "
               "s.box_x2 = f.box_x2 AND s.box_y2 = f.box_y2")
ADDED, PRESENT, GONE = "added", "present", "gone"  # what `add_reembedded` did with each face
INSERT_IDENTITY = ("INSERT INTO gallery_identities (id, name, metadata, created_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (id) DO NOTHING")


class Gallery:
    """Identities, their face embeddings of one model, and exact search over them.

    Every method is synchronous and thread-safe (call it through `asyncio.to_thread` from async code); any
    number of processes may hold a Gallery over the same store. Every change bumps the gallery's change
    counter in its own transaction, so every process's index follows it (docs/store.md), and is recorded in
    the audit trail in that same transaction, under `caller` (LOCAL: the machine's own user, as the CLI).
    """

    def __init__(self, store: Store, model: EmbeddingModel, *, poll_interval_s: float = 0.1, **index_options):
        """`index_options`: GalleryIndex's (where saved indexes live, the size exact search stops at)."""
        store.migrate("gallery", MIGRATIONS)
        self.store, self.model = store, model
        self.index = GalleryIndex(store, model, poll_interval_s=poll_interval_s, **index_options)

    # ---- identities ----------------------------------------------------------

    def create_identity(self, name: str, metadata: dict[str, Any] | None = None,
                        faces: Sequence[NewFace] = (), *, caller: Caller = LOCAL) -> StoredIdentity:
        """A new identity, with its first faces if given, in one transaction."""
        name = validation.name(name)
        metadata_json = validation.metadata_json(metadata)
        rows = [self._face_row(face) for face in faces]
        identity_id, created = new_id(), utc_now()
        with self.store.transaction() as tx:
            version = tx.bump(TOPIC)
            tx.execute(INSERT_IDENTITY, (identity_id, name, metadata_json, created))
            tx.executemany(INSERT_FACE, [(face_id, identity_id, *row, version) for face_id, *row in rows])
            audit.record(tx, caller, audit.CREATE_IDENTITY, [identity_id], [face_id for face_id, *_ in rows])
            # Read back before the commit: a store lost after it must not turn a committed create into a 503.
            detail = self._detail(tx, identity_id)
        self.index.mark_stale()
        return detail

    def add_faces(self, identity_id: str, faces: Sequence[NewFace], *, caller: Caller = LOCAL) -> list[StoredFace]:
        if not faces:
            raise InvalidRequest("no face to add")
        rows = [self._face_row(face) for face in faces]
        with self.store.transaction() as tx:
            self._require_identity(tx, identity_id)
            version = tx.bump(TOPIC)
            tx.executemany(INSERT_FACE, [(face_id, identity_id, *row, version) for face_id, *row in rows])
            audit.record(tx, caller, audit.ADD_FACES, [identity_id], [face_id for face_id, *_ in rows])
            added = [_face(row) for row in tx.all(
                f"SELECT {FACE_COLUMNS} FROM gallery_faces f WHERE f.version = ? AND f.identity_id = ? ORDER BY f.id",
                (version, identity_id))]
        self.index.mark_stale()
        return added

    def list_identities(self, limit: int = 100, after: str | None = None) -> IdentityPage:
        """Identities in creation order with their face counts and their metadata's keys (never its values: a
        page stays small); `after` is the previous page's `next_after`."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        with self.store.read() as tx:
            # At most the bound's worth of each metadata is read: a row stored before the bound may be larger.
            rows = tx.all(f"SELECT i.id, i.name, SUBSTR(i.metadata, 1, {validation.MAX_METADATA_BYTES + 1}), "
                          "i.created_at, (SELECT COUNT(*) FROM gallery_faces f WHERE f.identity_id = i.id) "
                          "FROM gallery_identities i WHERE i.id > ? ORDER BY i.id LIMIT ?", (after or "", limit + 1))
            (total,) = tx.one("SELECT COUNT(*) FROM gallery_identities")
        identities = tuple(_summary(row) for row in rows[:limit])
        return IdentityPage(identities=identities, next_after=identities[-1].id if len(rows) > limit else None,
                            total=total)

    def get_identity(self, identity_id: str) -> StoredIdentity:
        """The identity and its faces' metadata (never their vectors)."""
        with self.store.read() as tx:
            return self._detail(tx, identity_id)

    @staticmethod
    def _detail(tx: Transaction, identity_id: str) -> StoredIdentity:
        row = tx.one("SELECT id, name, metadata, created_at FROM gallery_identities WHERE id = ?", (identity_id,))
        if row is None:
            raise NotFound(f"no identity {identity_id!r} in the gallery")
        faces = tuple(_face(face) for face in tx.all(
            f"SELECT {FACE_COLUMNS} FROM gallery_faces f WHERE f.identity_id = ? ORDER BY f.id", (identity_id,)))
        identity_id, name, metadata, created_at = row
        return StoredIdentity(identity_id, name, json.loads(metadata), created_at, len(faces), faces)

    def thumbnail(self, face_id: str) -> bytes | None:
        """The face's stored JPEG (where it lies in the photo: the face's `thumbnail_frame`)."""
        with self.store.read() as tx:
            row = tx.one("SELECT thumbnail FROM gallery_faces WHERE id = ?", (face_id,))
        if row is None:
            raise NotFound(f"no face {face_id!r} in the gallery")
        return None if row[0] is None else bytes(row[0])

    def delete_face(self, face_id: str, *, caller: Caller = LOCAL) -> None:
        with self.store.transaction() as tx:
            row = tx.one("SELECT identity_id FROM gallery_faces WHERE id = ?", (face_id,))
            if row is None:
                raise NotFound(f"no face {validation.shown(face_id)} in the gallery")
            self._record_removal(tx, "id = ?", (face_id,))
            tx.execute("DELETE FROM gallery_faces WHERE id = ?", (face_id,))
            audit.record(tx, caller, audit.DELETE_FACE, [row[0]], [face_id])
        self.index.mark_stale()

    def delete_identity(self, identity_id: str, *, caller: Caller = LOCAL) -> int:
        """Delete the identity and every embedding of it; return how many faces went with it."""
        with self.store.transaction() as tx:
            self._require_identity(tx, identity_id)
            self._record_removal(tx, "identity_id = ?", (identity_id,))
            faces = [face_id for (face_id,) in tx.all("SELECT id FROM gallery_faces WHERE identity_id = ? ORDER BY id",
                                                      (identity_id,))]
            tx.execute("DELETE FROM gallery_faces WHERE identity_id = ?", (identity_id,))
            tx.execute("DELETE FROM gallery_identities WHERE id = ?", (identity_id,))
            audit.record(tx, caller, audit.DELETE_IDENTITY, [identity_id], faces)
        self.index.mark_stale()
        return len(faces)

    def audit(self, limit: int = 100, after: str | None = None) -> AuditPage:
        """The audit trail, oldest first; `after` is the previous page's `next_after`."""
        with self.store.read() as tx:
            return audit.page(tx, limit, after)

    # ---- re-embedding (faceserve/services/reembed.py) ------------------------------

    def faces_of_other_models(self) -> list[tuple[StoredFace, bool]]:
        """Every face stored under another model than this gallery's, by identity, and whether its identity already
        holds a face of this model from the same image at the same box (re-embedded before)."""
        model = (self.model.name, self.model.version, self.model.dimension)
        with self.store.read() as tx:
            rows = tx.all(f"SELECT {FACE_COLUMNS}, EXISTS (SELECT 1 FROM gallery_faces s WHERE "
                          f"s.identity_id = f.identity_id AND {SAME_MODEL.format('s')} AND {SAME_SOURCE}) "
                          f"FROM gallery_faces f WHERE NOT ({SAME_MODEL.format('f')}) ORDER BY f.identity_id, f.id",
                          (*model, *model))
        return [(_face(row[:-1]), bool(row[-1])) for row in rows]

    def identities_not_under(self, serving: EmbeddingModel) -> set[str]:
        """The identities holding faces of this gallery's model and none of `serving`'s: those not yet re-embedded,
        which only this gallery's model can find."""
        with self.store.read() as tx:
            rows = tx.all(f"SELECT DISTINCT f.identity_id FROM gallery_faces f WHERE {SAME_MODEL.format('f')} AND "
                          f"NOT EXISTS (SELECT 1 FROM gallery_faces s WHERE s.identity_id = f.identity_id AND "
                          f"{SAME_MODEL.format('s')})",
                          (self.model.name, self.model.version, self.model.dimension,
                           serving.name, serving.version, serving.dimension))
        return {row[0] for row in rows}

    def add_reembedded(self, identity_id: str, faces: Sequence[tuple[str, NewFace]], *, caller: Caller = LOCAL,
                       dry_run: bool = False) -> list[str]:
        """Add each (stored face id, its face embedded by this gallery's model) to `identity_id` in one transaction,
        unless the identity already holds a face of this model from the same image at the same box; the stored
        faces stay. Per face: ADDED, PRESENT, or GONE (the stored face or its identity was deleted meanwhile).
        `dry_run`: what would be added, nothing written."""
        rows = [self._face_row(face) for _, face in faces]
        with (self.store.read() if dry_run else self.store.transaction()) as tx:
            # The counter's row lock first: a concurrent run for the same identity waits, then sees what it added.
            version = None if dry_run else tx.bump(TOPIC)
            sources = {row[0] for row in _rows_of(
                tx, "SELECT f.id FROM gallery_faces f JOIN gallery_identities i ON i.id = f.identity_id "
                    "WHERE f.identity_id = ? AND f.id IN ({})", [source for source, _ in faces], (identity_id,))}
            held = {_source_key(*row) for row in tx.all(
                f"SELECT image_sha256, box_x1, box_y1, box_x2, box_y2 FROM gallery_faces f WHERE identity_id = ? "
                f"AND {SAME_MODEL.format('f')}", (identity_id, self.model.name, self.model.version,
                                                  self.model.dimension))}
            outcomes, added = [], []
            for (source, _), (face_id, *row) in zip(faces, rows):
                key = _source_key(row[4], *row[5:9])
                outcome = GONE if source not in sources else PRESENT if key in held else ADDED
                if outcome == ADDED:
                    held.add(key)
                    added.append((face_id, identity_id, *row, version))
                outcomes.append(outcome)
            if added and not dry_run:
                tx.executemany(INSERT_FACE, added)
                audit.record(tx, caller, audit.REEMBED, [identity_id], [row[0] for row in added])
        if added and not dry_run:
            self.index.mark_stale()
        return outcomes

    # ---- search ----------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """For each row of `vectors` (n, dimension): the top `k` identities by cosine similarity of their
        closest face, best first. Sees every face added before the last poll (at most `poll_interval_s` ago; at
        once for this process's own changes and, on PostgreSQL, everyone's), and never an identity deleted
        before the search, whichever process deleted it: the matches are checked against the store."""
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.model.dimension:
            raise InvalidRequest(f"search takes vectors of shape (n, {self.model.dimension}), not {queries.shape}")
        norms = np.linalg.norm(queries, axis=1)
        if not np.all(np.isfinite(norms)) or not np.all(norms > 0):
            raise InvalidRequest("every search vector must be finite and non-zero")
        # a few more than asked: those deleted since this process's index last followed the store are dropped
        found = self.index.search(queries, k + DELETED_SLACK)
        matched = sorted({match.identity_id for matches in found for match in matches})
        try:
            with self.store.read() as tx:
                existing = {row[0] for row in tx.all(
                    f"SELECT id FROM gallery_identities WHERE id IN ({', '.join('?' * len(matched))})",
                    matched)} if matched else set()
        except StoreUnavailable:  # the index in memory keeps answering while the store is away (docs/store.md)
            return [matches[:k] for matches in found]
        return [[match for match in matches if match.identity_id in existing][:k] for matches in found]

    def close(self) -> None:
        """Stop the index's background build, if one runs (the store stays open: its opener closes it)."""
        self.index.close()

    # ---- export and import -------------------------------------------------------

    def export_file(self, target: Path | BinaryIO) -> TransferCounts:
        """Write every identity and its faces of this gallery's model (docs/store.md: the file format)."""
        return transfer.export(self, target)

    def import_file(self, source: Path | BinaryIO, *, caller: Caller = LOCAL) -> ImportCounts:
        """Add what an exported file holds, all of it in one transaction or nothing (docs/store.md). Refuses, before
        writing anything, a file of another model name or version (ModelMismatch) and a malformed line
        (InvalidRequest naming it); an identity already here unless the file's line is identical to it (then it
        is skipped and counted as present), and a new identity holding a face id already here (409)."""
        return transfer.import_(self, source, caller)

    def import_identities(self, identities: Sequence[transfer.ExportedIdentity],
                          caller: Caller = LOCAL) -> ImportCounts:
        """Store checked exported identities with their ids, in one transaction (see `import_file`)."""
        with self.store.transaction() as tx:
            # The counter's row lock first: a concurrent import of the same ids waits, then reads what it added.
            version = tx.bump(TOPIC)
            stored = {row[0]: row[1:] for row in _rows_of(
                tx, "SELECT id, name, metadata, created_at FROM gallery_identities WHERE id IN ({})",
                [i.id for i in identities])}
            stored_faces: dict[str, set[tuple]] = {}
            for identity_id, *face in _rows_of(
                    tx, "SELECT identity_id, id, vector, image_sha256, box_x1, box_y1, box_x2, box_y2, "
                        "thumbnail IS NOT NULL, thumbnail_x1, thumbnail_y1, thumbnail_scale, created_at "
                        "FROM gallery_faces WHERE model_name = ? AND "
                        "model_version = ? AND dimension = ? AND identity_id IN ({})",
                    list(stored), (self.model.name, self.model.version, self.model.dimension)):
                stored_faces.setdefault(identity_id, set()).add(_face_content(*face))
            new = [i for i in identities if i.id not in stored]
            for identity in identities:
                if identity.id in stored and not (
                        _identity_content(identity) == _canonical(*stored[identity.id])
                        and {_file_face_content(f) for f in identity.faces} == stored_faces.get(identity.id, set())):
                    raise FaceserveError(
                        f"line {identity.line} of the gallery file: identity {identity.id} is in the gallery with "
                        "other content; an import never changes or adds to an identity (delete it first to replace "
                        "it)", code="identity_exists", status=409)
            taken = dict(_rows_of(tx, "SELECT id, identity_id FROM gallery_faces WHERE id IN ({})",
                                  [face[0] for i in new for face in i.faces]))
            for identity in new:
                for face in identity.faces:
                    if face[0] in taken:
                        raise FaceserveError(f"line {identity.line} of the gallery file: face {face[0]} is in the "
                                             "gallery already, under another identity", code="face_exists",
                                             status=409)
            tx.executemany(INSERT_IDENTITY, [(i.id, i.name, i.metadata, i.created_at) for i in new])
            faces = [(face_id, i.id, self.model.name, self.model.version, self.model.dimension, *rest, version)
                     for i in new for face_id, *rest in i.faces]
            tx.executemany(INSERT_FACE, faces)
            audit.record(tx, caller, audit.IMPORT, [i.id for i in new], [face[0] for face in faces])
        self.index.mark_stale()
        present = len(identities) - len(new)
        return ImportCounts(len(new), len(faces), present, sum(len(i.faces) for i in identities) - len(faces))

    # ---- helpers -------------------------------------------------------------------

    def _face_row(self, face: NewFace) -> tuple:
        """(id, model name, model version, dimension, vector, sha256, box..., thumbnail, its frame..., created)"""
        box = validation.box(face.box)
        thumbnail = validation.thumbnail(face.thumbnail)
        frame = validation.thumbnail_frame(face.thumbnail_frame, box, thumbnail)
        return (new_id(), self.model.name, self.model.version, self.model.dimension,
                validation.vector_bytes(self.model, face.vector), validation.sha256(face.image_sha256),
                *box, thumbnail, *frame_values(frame), utc_now())

    @staticmethod
    def _require_identity(tx: Transaction, identity_id: str) -> None:
        if tx.one("SELECT 1 FROM gallery_identities WHERE id = ?", (identity_id,)) is None:
            raise NotFound(f"no identity {identity_id!r} in the gallery")

    @staticmethod
    def _record_removal(tx: Transaction, where: str, params: tuple) -> int:
        """Bump the counter and note which faces this change removes, for the indexes that follow."""
        version = tx.bump(TOPIC)
        tx.execute(f"INSERT INTO gallery_removed_faces (version, face_id) SELECT ?, id FROM gallery_faces "
                   f"WHERE {where}", (version, *params))
        tx.execute("DELETE FROM gallery_removed_faces WHERE version <= ?", (version - REMOVALS_KEPT,))
        return version


def _rows_of(tx: Transaction, sql: str, ids: list[str], params: tuple = ()) -> list[tuple]:
    """The rows of `sql` whose `IN ({})` is each of `ids`, asked in chunks (SQLite binds at most 32766 parameters;
    stay far below)."""
    rows: list[tuple] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rows += tx.all(sql.format(", ".join("?" * len(chunk))), (*params, *chunk))
    return rows


def _source_key(sha256: str, x1: float, y1: float, x2: float, y2: float) -> tuple:
    """Which photo and where in it a face was enrolled from: the same for a face and its re-embeddings."""
    return sha256, float(x1), float(y1), float(x2), float(y2)


def _canonical(name: str, metadata: str, created_at: str) -> tuple[str, str, str]:
    """A stored identity's content as an import line's is written (metadata: sorted keys, as stored since ever)."""
    return name, json.dumps(json.loads(metadata), ensure_ascii=False, allow_nan=False, sort_keys=True), created_at


def _identity_content(identity: transfer.ExportedIdentity) -> tuple[str, str, str]:
    return identity.name, identity.metadata, identity.created_at


def _face_content(face_id: str, vector: bytes, sha256: str, x1: float, y1: float, x2: float, y2: float,
                  has_thumbnail: Any, thumbnail_x1: float | None, thumbnail_y1: float | None,
                  thumbnail_scale: float | None, created_at: str) -> tuple:
    """What makes two faces the same: id, vector bits, image hash, box, creation; of the thumbnail whether there is
    one and where it lies in the photo (an import re-encodes thumbnails, so their bytes differ from one import to the
    next)."""
    return (face_id, bytes(vector), sha256, float(x1), float(y1), float(x2), float(y2), bool(has_thumbnail),
            frame_of(thumbnail_x1, thumbnail_y1, thumbnail_scale), created_at)


def _file_face_content(face: tuple) -> tuple:
    *described, thumbnail, thumbnail_x1, thumbnail_y1, thumbnail_scale, created_at = face
    return _face_content(*described, thumbnail is not None, thumbnail_x1, thumbnail_y1, thumbnail_scale, created_at)


def _summary(row: tuple) -> IdentitySummary:
    identity_id, name, metadata_head, created_at, face_count = row
    return IdentitySummary(id=identity_id, name=name, metadata_keys=_keys(metadata_head), created_at=created_at,
                           face_count=int(face_count))


def _keys(metadata_head: str) -> tuple[str, ...]:
    """The top-level keys of stored metadata from its first MAX_METADATA_BYTES + 1 characters; none for a row
    stored before the bound that is longer or nested deeper than the bounds allow."""
    if len(metadata_head) > validation.MAX_METADATA_BYTES or \
            validation.nesting(metadata_head.encode()) > validation.MAX_METADATA_DEPTH:
        return ()
    return tuple(sorted(json.loads(metadata_head)))


def _face(row: tuple) -> StoredFace:
    face_id, identity_id, model_name, model_version, dimension, sha256, x1, y1, x2, y2, thumbnail, created, *frame = row
    return StoredFace(face_id, identity_id, model_name, model_version, int(dimension), sha256,
                      (float(x1), float(y1), float(x2), float(y2)), bool(thumbnail), created, frame_of(*frame))
