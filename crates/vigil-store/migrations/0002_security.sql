-- Security: API keys (hashes only), the audit hash chain, sealed secrets.

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    -- SHA-256 of the key, hex. The key itself is never stored.
    hash         TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    rotated_from TEXT
);

CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY,
    time       TEXT NOT NULL,
    principal  TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    source     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_principal ON audit_events (principal);

-- The last event appended: appends lock this row (so they are serialised on
-- PostgreSQL), and verification compares the chain's end with it, which
-- catches events cut from the end.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Values sealed by the vault (hex): the store never sees a value or a data key.
CREATE TABLE secrets (
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped_key   TEXT NOT NULL,
    ciphertext    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
