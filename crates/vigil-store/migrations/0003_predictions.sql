-- The prediction log, in chunks: each row holds consecutive records of one
-- endpoint as JSON lines, sealed by the vault once per chunk. The sealed bytes
-- are binary (BYTEA on PostgreSQL; on SQLite the name gives NUMERIC affinity,
-- which stores a blob as it is): hex would double what is written. The other
-- columns are what selecting chunks and retention need. Inserts do not bump
-- the generation: replicas have nothing to reload when predictions are recorded.
CREATE TABLE prediction_chunks (
    id            TEXT PRIMARY KEY,
    endpoint      TEXT NOT NULL,
    first_us      BIGINT NOT NULL,
    last_us       BIGINT NOT NULL,
    records       BIGINT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped_key   BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    size_bytes    BIGINT NOT NULL
);
CREATE INDEX prediction_chunks_endpoint ON prediction_chunks (endpoint, first_us, id);
CREATE INDEX prediction_chunks_last ON prediction_chunks (endpoint, last_us);
