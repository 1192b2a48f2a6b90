-- The control plane's store on PostgreSQL. Times are Unix milliseconds. Every tenant-owned table has
-- row-level security on tenant_id: the store scopes each transaction with `omnisql.tenant` (a tenant id,
-- or `*` for platform-wide work), so a query that forgot its WHERE still sees one tenant only.
CREATE TABLE config_revision (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO config_revision (id, value) VALUES (1, 0);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    key_id TEXT NOT NULL,
    weight DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX tenants_region_revision ON tenants (region, revision);

CREATE TABLE principals (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE api_keys (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    prefix TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE connectors (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    parameters TEXT NOT NULL,
    tables TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE connections (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    connector TEXT NOT NULL,
    version TEXT NOT NULL,
    options TEXT NOT NULL,
    sealed_options TEXT NOT NULL,
    cache_ttl_seconds BIGINT,
    requests_per_second DOUBLE PRECISION,
    quota_share DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name),
    FOREIGN KEY (connector, version) REFERENCES connectors (name, version)
);

CREATE TABLE policies (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    rego TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE data_planes (
    id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    last_heartbeat_at BIGINT,
    acked_revision BIGINT NOT NULL,
    credential_sha256 TEXT NOT NULL UNIQUE
);

CREATE TABLE enrollment_tokens (
    sha256 TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE idempotency_keys (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE audit_events (
    tenant_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    principal TEXT NOT NULL,
    sql TEXT NOT NULL,
    tables TEXT NOT NULL,
    api_requests BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    started_at BIGINT NOT NULL,
    data_plane TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_started ON audit_events (tenant_id, started_at);

CREATE TABLE audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

-- Row-level security: a second line of defence behind the store's own tenant scoping.
CREATE FUNCTION omnisql_tenant_visible(row_tenant TEXT) RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT current_setting('omnisql.tenant', true) = '*' OR row_tenant = current_setting('omnisql.tenant', true)
$$;
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants USING (omnisql_tenant_visible(id)) WITH CHECK (omnisql_tenant_visible(id));
ALTER TABLE principals ENABLE ROW LEVEL SECURITY;
ALTER TABLE principals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON principals USING (omnisql_tenant_visible(tenant_id)) WITH CHECK (omnisql_tenant_visible(tenant_id));
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys USING (omnisql_tenant_visible(tenant_id)) WITH CHECK (omnisql_tenant_visible(tenant_id));
ALTER TABLE connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE connections FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON connections USING (omnisql_tenant_visible(tenant_id)) WITH CHECK (omnisql_tenant_visible(tenant_id));
ALTER TABLE policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON policies USING (omnisql_tenant_visible(tenant_id)) WITH CHECK (omnisql_tenant_visible(tenant_id));
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys USING (omnisql_tenant_visible(tenant_id)) WITH CHECK (omnisql_tenant_visible(tenant_id));
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events USING (omnisql_tenant_visible(tenant_id)) WITH CHECK (omnisql_tenant_visible(tenant_id));
ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_heads USING (omnisql_tenant_visible(tenant_id)) WITH CHECK (omnisql_tenant_visible(tenant_id));
