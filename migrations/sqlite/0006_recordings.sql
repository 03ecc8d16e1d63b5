-- Stream sessions the server opens itself (motion recording) have no requesting device;
-- a session says why it exists and which user asked for it. SQLite cannot drop a NOT NULL
-- constraint, so the table is rebuilt (nothing references it yet).
CREATE TABLE stream_sessions_v2 (
    id                   TEXT PRIMARY KEY NOT NULL,
    user_id              TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    camera_device_id     TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    requester_device_id  TEXT REFERENCES devices(id) ON DELETE CASCADE,
    requested_by_user_id TEXT REFERENCES "user"(id) ON DELETE CASCADE,
    reason               TEXT NOT NULL DEFAULT 'view' CHECK (reason IN ('view', 'recording')),
    status               TEXT NOT NULL CHECK (status IN ('requested', 'streaming', 'ended', 'expired')),
    end_reason           TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    started_at           TEXT,
    ended_at             TEXT
);
INSERT INTO stream_sessions_v2 (id, user_id, camera_device_id, requester_device_id, status, end_reason, created_at, updated_at, started_at, ended_at)
    SELECT id, user_id, camera_device_id, requester_device_id, status, end_reason, created_at, updated_at, started_at, ended_at
    FROM stream_sessions;
DROP TABLE stream_sessions;
ALTER TABLE stream_sessions_v2 RENAME TO stream_sessions;
CREATE INDEX stream_sessions_user_idx ON stream_sessions(user_id, created_at DESC, id DESC);
CREATE INDEX stream_sessions_camera_idx ON stream_sessions(camera_device_id, created_at DESC);
CREATE INDEX stream_sessions_requester_idx ON stream_sessions(requester_device_id, created_at DESC);
CREATE INDEX stream_sessions_status_idx ON stream_sessions(status, created_at);

-- Server-side recordings: one row per recorded stretch of a camera's live stream, and
-- its segments (uploadedAt stays NULL until the object store has the file).
CREATE TABLE recordings (
    id                TEXT PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    camera_device_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    stream_session_id TEXT REFERENCES stream_sessions(id) ON DELETE SET NULL,
    status            TEXT NOT NULL CHECK (status IN ('recording', 'complete', 'failed')),
    reason            TEXT NOT NULL CHECK (reason IN ('always', 'motion')),
    started_at        TEXT NOT NULL,
    ended_at          TEXT,
    duration_ms       BIGINT NOT NULL DEFAULT 0,
    size_bytes        BIGINT NOT NULL DEFAULT 0,
    video_codec       TEXT,
    audio_codec       TEXT,
    error             TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX recordings_user_idx ON recordings(user_id, created_at DESC, id DESC);
CREATE INDEX recordings_camera_idx ON recordings(camera_device_id, started_at);
CREATE INDEX recordings_status_idx ON recordings(status);

CREATE TABLE recording_segments (
    recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    object_key   TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    uploaded_at  TEXT,
    PRIMARY KEY (recording_id, seq)
);

-- A camera's own recording mode; NULL follows RECORDING_MODE.
ALTER TABLE devices ADD COLUMN recording_mode TEXT CHECK (recording_mode IN ('off', 'always', 'motion'));
