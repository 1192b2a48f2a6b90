-- Usage per event: upstream requests by app (JSON object) and answers served from the response cache.
ALTER TABLE audit_events ADD COLUMN api_requests_by_app TEXT NOT NULL DEFAULT '{}';
ALTER TABLE audit_events ADD COLUMN cache_hits BIGINT NOT NULL DEFAULT 0;
