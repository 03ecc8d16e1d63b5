-- Devices, links, commands, motion events and stream sessions.
CREATE TABLE devices (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('camera', 'client')),
    platform     TEXT,
    metadata     TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    token_hash   TEXT NOT NULL UNIQUE,
    last_seen_at TEXT,
    last_heartbeat_at TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX devices_user_idx ON devices(user_id, created_at DESC, id DESC);

CREATE TABLE device_links (
    id               TEXT PRIMARY KEY NOT NULL,
    user_id          TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    camera_device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    client_device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    created_at       TEXT NOT NULL,
    UNIQUE (camera_device_id, client_device_id)
);
CREATE INDEX device_links_user_idx ON device_links(user_id, created_at DESC, id DESC);
CREATE INDEX device_links_client_idx ON device_links(client_device_id);

CREATE TABLE commands (
    id               TEXT PRIMARY KEY NOT NULL,
    user_id          TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    source_device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    target_device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    type             TEXT NOT NULL,
    payload          TEXT NOT NULL DEFAULT 'null',
    status           TEXT NOT NULL CHECK (status IN ('queued', 'dispatched', 'acknowledged', 'rejected', 'expired')),
    reason           TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL
);
CREATE INDEX commands_user_idx ON commands(user_id, created_at DESC, id DESC);
CREATE INDEX commands_target_pending_idx ON commands(target_device_id, status);
CREATE INDEX commands_open_expiry_idx ON commands(status, expires_at);

CREATE TABLE motion_events (
    id               TEXT PRIMARY KEY NOT NULL,
    user_id          TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    camera_device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    started_at       TEXT NOT NULL,
    ended_at         TEXT,
    score            DOUBLE PRECISION,
    metadata         TEXT NOT NULL DEFAULT '{}',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX motion_events_user_idx ON motion_events(user_id, created_at DESC, id DESC);
CREATE INDEX motion_events_open_idx ON motion_events(ended_at, started_at);

CREATE TABLE stream_sessions (
    id                  TEXT PRIMARY KEY NOT NULL,
    user_id             TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    camera_device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    requester_device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    status              TEXT NOT NULL CHECK (status IN ('requested', 'streaming', 'ended', 'expired')),
    end_reason          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    started_at          TEXT,
    ended_at            TEXT
);
CREATE INDEX stream_sessions_user_idx ON stream_sessions(user_id, created_at DESC, id DESC);
CREATE INDEX stream_sessions_camera_idx ON stream_sessions(camera_device_id, created_at DESC);
CREATE INDEX stream_sessions_requester_idx ON stream_sessions(requester_device_id, created_at DESC);
CREATE INDEX stream_sessions_status_idx ON stream_sessions(status, created_at);
