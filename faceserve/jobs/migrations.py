"""The jobs' tables, versioned (faceserve/store applies them)."""

from faceserve.store import Migration

MIGRATIONS = (
    Migration(1, (
        """CREATE TABLE jobs (
               id TEXT PRIMARY KEY,              -- a UUIDv7
               owner TEXT NOT NULL,              -- who submitted it (an API key's hash, or "" without keys)
               state TEXT NOT NULL,              -- queued | done | cancelled
               options TEXT NOT NULL,            -- JSON: the analyze options (detector, identify)
               total INTEGER NOT NULL,
               created_at TEXT NOT NULL,
               finished_at TEXT
           )""",
        "CREATE INDEX jobs_owner_state ON jobs (owner, state)",
        """CREATE TABLE jobs_items (
               job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
               position INTEGER NOT NULL,
               name TEXT NOT NULL,
               image {blob},                     -- the uploaded bytes until the item is finished
               url TEXT,                         -- or the URL to fetch
               state TEXT NOT NULL,              -- queued | running | done | failed | cancelled
               result TEXT,                      -- JSON: the analysis
               error TEXT,                       -- JSON: the error body (error, message)
               lease_owner TEXT,
               lease_until DOUBLE PRECISION,     -- seconds since the epoch
               attempts INTEGER NOT NULL,
               PRIMARY KEY (job_id, position)
           )""",
        "CREATE INDEX jobs_items_state ON jobs_items (state, job_id, position)",
    )),
    # Owners became callers' principals ("key:<id>", "client:<address>"). A job of before was owned by an API key's
    # sha256 or by "" (everyone, without keys), neither of which names a principal: such a job becomes nobody's
    # (an admin still sees it) and counts against nobody's queue.
    Migration(2, ("UPDATE jobs SET owner = 'legacy:' || owner",)),
)
