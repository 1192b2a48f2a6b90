-- Groups and attributes of principals, for row- and column-level policies (JSON text), and the policy
-- revision each audited query was checked against.
ALTER TABLE principals ADD COLUMN group_names TEXT;
ALTER TABLE principals ADD COLUMN attributes TEXT;
ALTER TABLE audit_events ADD COLUMN policy_revision TEXT;
