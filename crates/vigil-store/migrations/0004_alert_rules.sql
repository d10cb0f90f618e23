-- Alert rules made through the API (rules in the configuration are not
-- stored). The rule is the JSON the API took; changes bump the generation,
-- so that every replica picks them up.
CREATE TABLE alert_rules (
    name       TEXT PRIMARY KEY,
    rule       TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
