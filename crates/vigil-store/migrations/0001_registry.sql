-- The registry. One schema for SQLite and PostgreSQL: only types and syntax
-- both accept. Times are RFC 3339 text (UTC), JSON is text.

CREATE TABLE models (
    name         TEXT PRIMARY KEY,
    created_at   TEXT NOT NULL,
    -- Numbers are never reused, even after a delete: a number names one content forever.
    last_version BIGINT NOT NULL
);

CREATE TABLE versions (
    model         TEXT NOT NULL REFERENCES models (name),
    version       BIGINT NOT NULL,
    digest        TEXT NOT NULL,
    -- Artifact digest + manifest digest: identical content registers once.
    content_key   TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    manifest      TEXT NOT NULL,
    signature     TEXT NOT NULL,
    labels        TEXT NOT NULL,
    metrics       TEXT NOT NULL,
    lineage       TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    vigil_version TEXT NOT NULL,
    PRIMARY KEY (model, version),
    UNIQUE (model, content_key)
);

CREATE TABLE aliases (
    model      TEXT NOT NULL,
    alias      TEXT NOT NULL,
    version    BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);

CREATE TABLE alias_history (
    model      TEXT NOT NULL,
    alias      TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    -- NULL: the alias was deleted.
    version    BIGINT,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (model, alias, seq)
);

CREATE TABLE endpoints (
    name             TEXT PRIMARY KEY,
    current_revision BIGINT NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL
);

CREATE TABLE revisions (
    endpoint   TEXT NOT NULL REFERENCES endpoints (name) ON DELETE CASCADE,
    revision   BIGINT NOT NULL,
    spec       TEXT NOT NULL,
    digests    TEXT NOT NULL,
    comment    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (endpoint, revision)
);

-- Bumped first in every write transaction: replicas poll it to see that
-- something changed, and on PostgreSQL its row lock serialises writers.
CREATE TABLE generation (
    id    INTEGER PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO generation (id, value) VALUES (1, 0);
