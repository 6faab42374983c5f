
ALTER TABLE agents ADD COLUMN signing_key TEXT NULL;
CREATE TABLE evidence (
    task_id TEXT PRIMARY KEY NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    kind TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    source_path TEXT NULL,
    manifest TEXT NOT NULL,
    agent_public_key TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX evidence_sha256 ON evidence (sha256);
CREATE INDEX evidence_agent ON evidence (agent_id, received_at);
