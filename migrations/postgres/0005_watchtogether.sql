-- Watch Together rooms (StreamVault), kept across restarts: one JSON snapshot per room.
CREATE TABLE watchtogether_rooms (
    code             TEXT PRIMARY KEY NOT NULL,
    snapshot         TEXT NOT NULL,
    creator_ip       TEXT,
    last_activity_ms BIGINT NOT NULL
);
