
CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    received_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    outcome TEXT NOT NULL,
    actor TEXT NOT NULL,
    external_id TEXT NULL,
    agent_id TEXT NULL,
    detail TEXT NOT NULL,
    raw TEXT NOT NULL,
    raw_sha256 TEXT NOT NULL
);
CREATE INDEX alerts_incident ON alerts (incident_id, received_at);
CREATE INDEX alerts_received ON alerts (received_at);
