
CREATE TABLE incidents (
    id TEXT PRIMARY KEY NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    stage TEXT NOT NULL,
    description TEXT NOT NULL,
    assignee TEXT NULL,
    tier BIGINT NOT NULL,
    escalated_to TEXT NULL,
    labels TEXT NOT NULL,
    fingerprint TEXT NULL,
    open_fingerprint TEXT NULL,
    alert_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT NULL
);
CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (open_fingerprint);
CREATE INDEX incidents_updated ON incidents (updated_at);
CREATE TABLE incident_hosts (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    added_at BIGINT NOT NULL,
    added_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, agent_id)
);
CREATE INDEX incident_hosts_agent ON incident_hosts (agent_id);
CREATE TABLE incident_links (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    linked_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, kind, ref_id)
);
CREATE INDEX incident_links_ref ON incident_links (kind, ref_id);
CREATE TABLE stage_entries (
    id TEXT PRIMARY KEY NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    stage TEXT NOT NULL,
    entered_at BIGINT NOT NULL,
    entered_by TEXT NOT NULL,
    playbook_state TEXT NOT NULL,
    playbook_detail TEXT NULL
);
CREATE INDEX stage_entries_state ON stage_entries (playbook_state, entered_at);
CREATE TABLE incident_timeline (
    id BIGSERIAL PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id);
