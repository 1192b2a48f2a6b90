-- The data_plane_operator role: a principal of the platform tenant that may mint enrollment tokens for
-- its regions and remove the data planes enrolled with its tokens (what a Kubernetes operator needs).
ALTER TABLE principals ADD COLUMN regions TEXT;
ALTER TABLE enrollment_tokens ADD COLUMN created_by TEXT;
ALTER TABLE data_planes ADD COLUMN enrolled_by TEXT;
