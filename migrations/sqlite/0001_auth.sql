-- Better Auth's core schema (user, session, account, verification), snake_case columns.
-- Timestamps are RFC 3339 text in UTC.
CREATE TABLE "user" (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL,
    email          TEXT NOT NULL UNIQUE,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    image          TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE session (
    id         TEXT PRIMARY KEY NOT NULL,
    expires_at TEXT NOT NULL,
    token      TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    ip_address TEXT,
    user_agent TEXT,
    user_id    TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE
);
CREATE INDEX session_user_id_idx ON session(user_id);

CREATE TABLE account (
    id                       TEXT PRIMARY KEY NOT NULL,
    account_id               TEXT NOT NULL,
    provider_id              TEXT NOT NULL,
    user_id                  TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    access_token             TEXT,
    refresh_token            TEXT,
    id_token                 TEXT,
    access_token_expires_at  TEXT,
    refresh_token_expires_at TEXT,
    scope                    TEXT,
    password                 TEXT,
    created_at               TEXT NOT NULL,
    updated_at               TEXT NOT NULL
);
CREATE INDEX account_user_id_idx ON account(user_id);
CREATE UNIQUE INDEX account_provider_account_idx ON account(provider_id, account_id);

CREATE TABLE verification (
    id         TEXT PRIMARY KEY NOT NULL,
    identifier TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX verification_identifier_idx ON verification(identifier);
