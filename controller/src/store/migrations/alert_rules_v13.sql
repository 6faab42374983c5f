ALTER TABLE alerts ADD COLUMN rule TEXT NULL;
CREATE INDEX alerts_rule ON alerts (rule);
