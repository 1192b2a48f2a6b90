-- Connection tests admins ask for: a data plane of the tenant's region takes each (sets data_plane), reads
-- one row through the connection and reports the result (JSON). Kept as a record of who tested what.
CREATE TABLE connection_tests (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    connection TEXT NOT NULL,
    region TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    data_plane TEXT,
    claimed_at BIGINT,
    finished_at BIGINT,
    result TEXT
);
CREATE INDEX connection_tests_waiting ON connection_tests (region, requested_at) WHERE data_plane IS NULL;
