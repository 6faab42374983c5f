CREATE TABLE observables (
    id TEXT PRIMARY KEY NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    value_key TEXT NOT NULL,
    verdict TEXT NOT NULL,
    ignored BIGINT NOT NULL DEFAULT 0,
    added_by TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sightings BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX observables_value ON observables (incident_id, value_key);
CREATE INDEX observables_by_value ON observables (value_key);
CREATE TABLE observable_sightings (
    id TEXT PRIMARY KEY NOT NULL,
    observable_id TEXT NOT NULL REFERENCES observables(id),
    at BIGINT NOT NULL,
    source TEXT NOT NULL,
    ref_id TEXT NULL,
    agent_id TEXT NULL,
    actor TEXT NOT NULL
);
CREATE INDEX observable_sightings_of ON observable_sightings (observable_id, at);
