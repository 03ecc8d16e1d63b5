-- Stream sessions the server opens itself (motion recording) have no requesting device;
-- a session says why it exists and which user asked for it.
ALTER TABLE stream_sessions ALTER COLUMN requester_device_id DROP NOT NULL;
ALTER TABLE stream_sessions ADD COLUMN requested_by_user_id TEXT REFERENCES "user"(id) ON DELETE CASCADE;
ALTER TABLE stream_sessions ADD COLUMN reason TEXT NOT NULL DEFAULT 'view' CHECK (reason IN ('view', 'recording'));

-- Server-side recordings: one row per recorded stretch of a camera's live stream, and
-- its segments (uploadedAt stays NULL until the object store has the file).
CREATE TABLE recordings (
    id                TEXT PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    camera_device_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    stream_session_id TEXT REFERENCES stream_sessions(id) ON DELETE SET NULL,
    status            TEXT NOT NULL CHECK (status IN ('recording', 'complete', 'failed')),
    reason            TEXT NOT NULL CHECK (reason IN ('always', 'motion')),
    started_at        TIMESTAMPTZ NOT NULL,
    ended_at          TIMESTAMPTZ,
    duration_ms       BIGINT NOT NULL DEFAULT 0,
    size_bytes        BIGINT NOT NULL DEFAULT 0,
    video_codec       TEXT,
    audio_codec       TEXT,
    error             TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX recordings_user_idx ON recordings(user_id, created_at DESC, id DESC);
CREATE INDEX recordings_camera_idx ON recordings(camera_device_id, started_at);
CREATE INDEX recordings_status_idx ON recordings(status);

CREATE TABLE recording_segments (
    recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    object_key   TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    duration_ms  BIGINT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    uploaded_at  TIMESTAMPTZ,
    PRIMARY KEY (recording_id, seq)
);

-- A camera's own recording mode; NULL follows RECORDING_MODE.
ALTER TABLE devices ADD COLUMN recording_mode TEXT CHECK (recording_mode IN ('off', 'always', 'motion'));
