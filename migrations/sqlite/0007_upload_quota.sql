-- The size a client declared when it asked to upload; bound into the presigned PUT
-- and counted against the account's quota while the upload is pending.
ALTER TABLE videos ADD COLUMN declared_size BIGINT;
