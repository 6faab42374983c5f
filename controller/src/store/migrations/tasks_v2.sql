
CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    hunt_id TEXT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    sent_at BIGINT NULL,
    started_at BIGINT NULL,
    finished_at BIGINT NULL,
    result TEXT NULL,
    error_code TEXT NULL,
    error_message TEXT NULL
);
CREATE INDEX tasks_agent_state ON tasks (agent_id, state);
CREATE INDEX tasks_state_expires ON tasks (state, expires_at);
