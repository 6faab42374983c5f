CREATE INDEX observables_by_value_time ON observables (value_key, added_at);
