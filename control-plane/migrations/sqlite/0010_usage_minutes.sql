-- Each tenant's queries per minute, rolled up from its audit events as they are stored (JSON: counters and a
-- latency histogram, control-plane/src/usage.rs), so usage charts read one row per minute. Events stored
-- before this migration are not rolled up (the audit trail itself keeps them).
CREATE TABLE usage_minutes (
    tenant_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    rollup TEXT NOT NULL,
    PRIMARY KEY (tenant_id, minute)
);
