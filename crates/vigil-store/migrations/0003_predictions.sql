-- The prediction log: one row per recorded request. The payload (inputs and
-- outputs) is sealed by the vault (hex); the other columns are what filters
-- and retention need. Inserts do not bump the generation: replicas have
-- nothing to reload when a prediction is recorded.
CREATE TABLE predictions (
    id            TEXT PRIMARY KEY,
    endpoint      TEXT NOT NULL,
    version       TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    principal     TEXT NOT NULL,
    time_us       BIGINT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped_key   TEXT NOT NULL,
    ciphertext    TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL
);
CREATE INDEX predictions_endpoint_time ON predictions (endpoint, time_us, id);
CREATE INDEX predictions_request ON predictions (request_id);
