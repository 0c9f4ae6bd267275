"""The gallery's tables, versioned (faceserve/store applies them), and the name of its change counter."""

from faceserve.store import Migration

TOPIC = "gallery"

MIGRATIONS = (
    Migration(1, (
        """CREATE TABLE gallery_identities (
               id TEXT PRIMARY KEY,              -- a UUIDv7: creation order, the pagination key
               name TEXT NOT NULL,
               metadata TEXT NOT NULL,           -- a JSON object
               created_at TEXT NOT NULL
           )""",
        """CREATE TABLE gallery_faces (
               id TEXT PRIMARY KEY,
               identity_id TEXT NOT NULL REFERENCES gallery_identities (id) ON DELETE CASCADE,
               model_name TEXT NOT NULL,
               model_version TEXT NOT NULL,
               dimension INTEGER NOT NULL,
               vector {blob} NOT NULL,           -- `dimension` little-endian float32, as the model gave them
               image_sha256 TEXT NOT NULL,
               box_x1 DOUBLE PRECISION NOT NULL,
               box_y1 DOUBLE PRECISION NOT NULL,
               box_x2 DOUBLE PRECISION NOT NULL,
               box_y2 DOUBLE PRECISION NOT NULL,
               thumbnail {blob},                 -- only when the caller asked for one
               created_at TEXT NOT NULL,
               version BIGINT NOT NULL           -- the gallery change that added it: indexes load what is new
           )""",
        "CREATE INDEX gallery_faces_identity ON gallery_faces (identity_id)",
        "CREATE INDEX gallery_faces_model ON gallery_faces (model_name, model_version, version)",
        # Which faces each change removed (ids only), so that indexes drop them without a full reload.
        """CREATE TABLE gallery_removed_faces (
               version BIGINT NOT NULL,
               face_id TEXT NOT NULL
           )""",
        "CREATE INDEX gallery_removed_faces_version ON gallery_removed_faces (version)",
    )),
    # The audit trail (audit.py): one row per change, written in the change's own transaction.
    Migration(2, (
        """CREATE TABLE gallery_audit (
               id TEXT PRIMARY KEY,              -- a UUIDv7: order, the pagination key
               at TEXT NOT NULL,
               key_id TEXT,                      -- the caller's API key id (never the key); NULL without keys
               address TEXT NOT NULL,            -- the client's address as the server saw it
               operation TEXT NOT NULL,
               identity_ids TEXT NOT NULL,       -- JSON list of the identities touched
               face_ids TEXT NOT NULL,           -- JSON list of the faces touched
               identities INTEGER NOT NULL,      -- their counts
               faces INTEGER NOT NULL
           )""",
    )),
    # Thumbnails with room around the face (docs/identity.md): where each lies in its photo. NULL for a thumbnail
    # stored before, which is the face's box alone, and for a face without one.
    Migration(3, (
        "ALTER TABLE gallery_faces ADD COLUMN thumbnail_x1 DOUBLE PRECISION",  # the photo point at its top-left
        "ALTER TABLE gallery_faces ADD COLUMN thumbnail_y1 DOUBLE PRECISION",
        "ALTER TABLE gallery_faces ADD COLUMN thumbnail_scale DOUBLE PRECISION",  # its pixels per photo pixel
    )),
)

# Removals older than this many changes are forgotten; an index further behind reloads in full.
REMOVALS_KEPT = 10_000
