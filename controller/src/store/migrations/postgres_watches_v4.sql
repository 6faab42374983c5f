
CREATE TABLE watches (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    paths TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    task_id TEXT NULL,
    stopped_at BIGINT NULL,
    stopped_by TEXT NULL
);
CREATE INDEX watches_agent ON watches (agent_id, stopped_at);
CREATE TABLE watch_events (
    id BIGSERIAL PRIMARY KEY,
    watch_id TEXT NOT NULL REFERENCES watches(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX watch_events_watch ON watch_events (watch_id, id);
