-- Each data plane's rate-limit buckets per tenant connection, as its last heartbeat reported them.
CREATE TABLE rate_limits (
    data_plane TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    connection TEXT NOT NULL,
    bucket TEXT NOT NULL,
    capacity DOUBLE PRECISION NOT NULL,
    window_seconds DOUBLE PRECISION NOT NULL,
    available DOUBLE PRECISION NOT NULL,
    waiting BIGINT NOT NULL,
    paused_for_seconds DOUBLE PRECISION,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (data_plane, tenant_id, connection, bucket)
);
CREATE INDEX rate_limits_tenant ON rate_limits (tenant_id);
ALTER TABLE rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_limits FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rate_limits USING (omnisql_tenant_visible(tenant_id)) WITH CHECK (omnisql_tenant_visible(tenant_id));
