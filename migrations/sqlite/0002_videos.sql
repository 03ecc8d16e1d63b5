CREATE TABLE videos (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    device_id    TEXT NOT NULL,
    object_key   TEXT NOT NULL UNIQUE,
    bucket       TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    content_type TEXT,
    size         BIGINT,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'uploaded')),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    uploaded_at  TEXT
);
CREATE INDEX videos_user_created_idx ON videos(user_id, created_at DESC, id DESC);
