"""The gallery's audit trail: who changed what, written in the same transaction as the change, so that a
change and its record are committed (and survive kill -9) or rolled back together. A refused request changes
nothing and leaves no record. Rows are kept until an operator removes them."""

from __future__ import annotations

import json
from typing import Sequence

from faceserve.errors import InvalidRequest
from faceserve.gallery.records import AuditEntry, AuditPage
from faceserve.http.caller import Caller
from faceserve.store import Transaction, new_id, utc_now

CREATE_IDENTITY, ADD_FACES, DELETE_FACE, DELETE_IDENTITY, IMPORT, REEMBED = (
    "create_identity", "add_faces", "delete_face", "delete_identity", "import", "reembed")
OPERATIONS = (CREATE_IDENTITY, ADD_FACES, DELETE_FACE, DELETE_IDENTITY, IMPORT, REEMBED)
MAX_PAGE = 1000


def record(tx: Transaction, caller: Caller, operation: str, identity_ids: Sequence[str],
           face_ids: Sequence[str]) -> None:
    assert operation in OPERATIONS, operation
    tx.execute("INSERT INTO gallery_audit (id, at, key_id, address, operation, identity_ids, face_ids, identities, "
               "faces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (new_id(), utc_now(), caller.key_id, caller.address, operation, json.dumps(list(identity_ids)),
                json.dumps(list(face_ids)), len(identity_ids), len(face_ids)))


def page(tx: Transaction, limit: int, after: str | None) -> AuditPage:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    columns = ("id", "at", "key_id", "address", "operation", "identity_ids", "face_ids", "identities", "faces")
    rows = tx.all(f"SELECT {', '.join(columns)} FROM gallery_audit WHERE id > ? ORDER BY id LIMIT ?",
                  (after or "", limit + 1))
    entries = tuple(AuditEntry(**{**dict(zip(columns, row)), "identity_ids": json.loads(row[5]),
                                  "face_ids": json.loads(row[6])}) for row in rows[:limit])
    return AuditPage(entries=entries, next_after=entries[-1].id if len(rows) > limit else None)
