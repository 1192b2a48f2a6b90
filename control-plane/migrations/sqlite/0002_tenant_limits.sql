-- Per-tenant limits on the data planes: longest statement and statements at once (NULL: the data
-- plane's default).
ALTER TABLE tenants ADD COLUMN statement_timeout_seconds BIGINT;
ALTER TABLE tenants ADD COLUMN max_concurrent_queries BIGINT;
