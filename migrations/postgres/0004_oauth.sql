-- OAuth states this server issued (StreamVault desktop flow, Better Auth social sign-in):
-- single use, expiring, with the PKCE verifier and where the result goes.
CREATE TABLE oauth_state (
    state                 TEXT PRIMARY KEY NOT NULL,
    flow                  TEXT NOT NULL,
    code_verifier         TEXT NOT NULL,
    redirect_uri          TEXT NOT NULL,
    client_state          TEXT,
    callback_url          TEXT,
    error_callback_url    TEXT,
    new_user_callback_url TEXT,
    expires_at            TIMESTAMPTZ NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX oauth_state_expires_at_idx ON oauth_state(expires_at);
