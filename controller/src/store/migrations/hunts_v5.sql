
CREATE TABLE hunts (
    id TEXT PRIMARY KEY NOT NULL,
    query TEXT NOT NULL,
    label TEXT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    agent_count BIGINT NOT NULL
);
CREATE INDEX hunts_created ON hunts (created_at);
CREATE INDEX tasks_hunt ON tasks (hunt_id, state);
