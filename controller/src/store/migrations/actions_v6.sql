
CREATE TABLE actions (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    signing_bytes TEXT NOT NULL,
    signatures TEXT NOT NULL,
    required_signers BIGINT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT NULL,
    receipt TEXT NULL,
    error_code TEXT NULL,
    error_message TEXT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    submitted_at BIGINT NULL,
    finished_at BIGINT NULL
);
CREATE INDEX actions_agent ON actions (agent_id, created_at);
CREATE INDEX actions_task ON actions (task_id);
CREATE INDEX actions_state_expires ON actions (state, expires_at);
