-- What a data plane last reported of its audit outbox: events it holds that are not stored here yet.
ALTER TABLE data_planes ADD COLUMN audit_pending BIGINT NOT NULL DEFAULT 0;
