
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    last_seen_at BIGINT NULL,
    connected BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT NULL,
    inventory TEXT NULL,
    labels TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    revoked_at BIGINT NULL
);
CREATE INDEX certificates_agent_id ON certificates (agent_id);
CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    note TEXT NULL,
    used_at BIGINT NULL,
    used_by_agent TEXT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NULL,
    revoked_at BIGINT NULL
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
