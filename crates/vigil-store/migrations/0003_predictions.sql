-- The prediction log, in chunks: each row holds consecutive records of one
-- endpoint as JSON lines, sealed by the vault once per chunk (hex). The other
-- columns are what selecting chunks and retention need. Inserts do not bump
-- the generation: replicas have nothing to reload when predictions are recorded.
CREATE TABLE prediction_chunks (
    id            TEXT PRIMARY KEY,
    endpoint      TEXT NOT NULL,
    first_us      BIGINT NOT NULL,
    last_us       BIGINT NOT NULL,
    records       BIGINT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped_key   TEXT NOT NULL,
    ciphertext    TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL
);
CREATE INDEX prediction_chunks_endpoint ON prediction_chunks (endpoint, first_us, id);
CREATE INDEX prediction_chunks_last ON prediction_chunks (endpoint, last_us);
