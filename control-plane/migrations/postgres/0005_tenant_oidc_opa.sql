-- The OIDC issuer a tenant trusts (JSON text: issuer, audience, principal_claim, groups_claim), and the
-- OPA server that decides its policies (JSON text: url, path, timeout_ms, cache_seconds).
ALTER TABLE tenants ADD COLUMN oidc TEXT;
ALTER TABLE tenants ADD COLUMN opa TEXT;
