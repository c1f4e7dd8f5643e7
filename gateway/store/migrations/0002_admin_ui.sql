-- Admin UI: server-side sessions and the single-use links of account emails.

CREATE TABLE admin_sessions (
    id_hash     bytea PRIMARY KEY,               -- SHA-256 of the cookie value; the value itself is never stored
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_partial  boolean NOT NULL DEFAULT false,  -- password accepted, second factor still to come
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    client_ip   inet
);
CREATE INDEX admin_sessions_user ON admin_sessions (user_id);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);

-- Email verification and password reset links (key confirmations have their own table).
CREATE TABLE account_tokens (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose       text NOT NULL CHECK (purpose IN ('verify', 'reset')),
    token_hash    bytea NOT NULL UNIQUE,         -- SHA-256 of the emailed link's token
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    superseded_at timestamptz                    -- set when a newer link of the same purpose is sent
);
CREATE INDEX account_tokens_user ON account_tokens (user_id, purpose);
