-- Monitoring. A version's reference profile (JSON: the training data's
-- per-feature bins and counts, docs/monitoring.md), keyed like the runtime
-- names versions; setting one bumps the generation so that every replica
-- starts counting against it. Windows are what one replica served in one
-- window of time, counted on the profile's bins (JSON); they are merged when
-- read, so replicas never contend on a row, and writing them does not bump
-- the generation.
CREATE TABLE reference_profiles (
    model      TEXT NOT NULL,
    version    TEXT NOT NULL,
    profile    TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE monitor_windows (
    endpoint TEXT NOT NULL,
    version  TEXT NOT NULL,
    start_s  BIGINT NOT NULL,
    replica  TEXT NOT NULL,
    sketch   TEXT NOT NULL,
    PRIMARY KEY (endpoint, version, start_s, replica)
);
