"""The feedback tables, versioned (faceserve/store applies them)."""

from faceserve.store import Migration

MIGRATIONS = (
    Migration(1, (
        # One row per answered request: enough to check a correction against what was said.
        """CREATE TABLE feedback_requests (
               id TEXT PRIMARY KEY,              -- the request id answered to the caller (a UUIDv7)
               created_at TEXT NOT NULL,
               image_sha256 TEXT NOT NULL,
               fields TEXT NOT NULL,             -- JSON: each field's model ("name:version") and labels (null: not a label)
               per_face INTEGER NOT NULL,        -- 1: answers per face; 0: one answer for the whole image
               answers TEXT NOT NULL,            -- JSON: per face (or for the image), what the model said per field
               image {blob}                      -- the image's bytes, only when the caller opted in
           )""",
        """CREATE TABLE feedback_corrections (
               id TEXT PRIMARY KEY,
               request_id TEXT NOT NULL REFERENCES feedback_requests (id),
               face_index INTEGER,               -- null for a whole-image answer
               field TEXT NOT NULL,
               model_said TEXT NOT NULL,
               correct TEXT NOT NULL,
               comment TEXT NOT NULL,
               model_name TEXT NOT NULL,
               model_version TEXT NOT NULL,
               image_sha256 TEXT NOT NULL,
               created_at TEXT NOT NULL
           )""",
        "CREATE INDEX feedback_corrections_field ON feedback_corrections (field)",
    )),
    # Forgetting old answers asks, per answer, whether a correction refers to it.
    Migration(2, ("CREATE INDEX feedback_corrections_request ON feedback_corrections (request_id)",)),
    # Whose answer it is (the caller's principal: "key:<id>", "client:<address>"): only they may correct it. An
    # answer of before was nobody's in particular, so nobody may correct it now.
    Migration(3, ("ALTER TABLE feedback_requests ADD COLUMN owner TEXT NOT NULL DEFAULT 'legacy:'",)),
    # A trial of a candidate version (faceserve/models/rollout.py): per request, field and face, what the serving
    # version and the candidate said, and each one's call time; written with the request's answer.
    Migration(4, (
        """CREATE TABLE feedback_comparisons (
               request_id TEXT NOT NULL,
               field TEXT NOT NULL,
               face_index INTEGER NOT NULL,
               model TEXT NOT NULL,              -- the model's name
               mode TEXT NOT NULL,               -- shadow or canary
               serving_version TEXT NOT NULL,
               candidate_version TEXT NOT NULL,
               answered_by TEXT NOT NULL,        -- the version whose answer the caller got
               serving_said TEXT NOT NULL,       -- a label, or a number for a field without labels
               candidate_said TEXT NOT NULL,
               serving_ms REAL NOT NULL,         -- the request's call of each version (its batcher's wait included)
               candidate_ms REAL NOT NULL,
               created_at TEXT NOT NULL,
               PRIMARY KEY (request_id, field, face_index)
           )""",
        "CREATE INDEX feedback_comparisons_model ON feedback_comparisons (model, serving_version, candidate_version)",
    )),
)
