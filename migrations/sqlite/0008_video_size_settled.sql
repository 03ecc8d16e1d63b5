-- A completed upload's size is final once its URL has expired (an S3 URL can put new
-- bytes until then). The janitor looks at each such object once and records its size.
ALTER TABLE videos ADD COLUMN size_settled BOOLEAN NOT NULL DEFAULT FALSE;
