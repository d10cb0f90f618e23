-- Ground truth: a row of a logged prediction (endpoint, request id, row)
-- joined with the label or value that arrived for it later. The prediction
-- is kept as the records API answered it (JSON), the truth as given; newer
-- feedback for the same row replaces older. Writes do not bump the generation.
CREATE TABLE feedback (
    endpoint     TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    row_index    BIGINT NOT NULL,
    version      TEXT NOT NULL,
    predicted_us BIGINT NOT NULL,
    received_us  BIGINT NOT NULL,
    prediction   TEXT NOT NULL,
    truth        TEXT NOT NULL,
    PRIMARY KEY (endpoint, request_id, row_index)
);
CREATE INDEX feedback_time ON feedback (endpoint, predicted_us);
