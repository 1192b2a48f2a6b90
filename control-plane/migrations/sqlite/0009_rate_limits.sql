-- Each data plane's rate-limit buckets per tenant connection, as its last heartbeat reported them.
CREATE TABLE rate_limits (
    data_plane TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    connection TEXT NOT NULL,
    bucket TEXT NOT NULL,
    capacity REAL NOT NULL,
    window_seconds REAL NOT NULL,
    available REAL NOT NULL,
    waiting BIGINT NOT NULL,
    paused_for_seconds REAL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (data_plane, tenant_id, connection, bucket)
);
CREATE INDEX rate_limits_tenant ON rate_limits (tenant_id);
