-- Keygate schema. PostgreSQL is the source of truth; Redis and in-process caches only copy it.

CREATE TABLE users (
    id                bigserial PRIMARY KEY,
    email             text NOT NULL,
    password_hash     text NOT NULL,             -- argon2id
    email_verified    boolean NOT NULL DEFAULT false,
    totp_secret_enc   text,                      -- TOTP secret, encrypted with a key derived from GATEWAY_SECRET_KEY
    totp_enabled      boolean NOT NULL DEFAULT false,
    totp_last_step    bigint,                    -- last accepted TOTP time step: a code is accepted once
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE totp_recovery_codes (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   bytea NOT NULL,
    used_at     timestamptz
);
CREATE INDEX totp_recovery_codes_user ON totp_recovery_codes (user_id);

CREATE TYPE key_status AS ENUM ('pending', 'active', 'deleted');

CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,              -- public id, part of the token
    user_id       bigint NOT NULL REFERENCES users (id),
    name          text NOT NULL,
    permissions   text[] NOT NULL,
    allowed_ips   inet[] NOT NULL DEFAULT '{}',  -- empty: any address
    status        key_status NOT NULL DEFAULT 'pending',
    secret_hash   bytea,                         -- HMAC-SHA256(pepper, secret); NULL until confirmed and after deletion
    hash_version  smallint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz,
    deleted_at    timestamptz,
    last_used_at  timestamptz,
    CONSTRAINT api_keys_active_has_hash CHECK (status <> 'active' OR secret_hash IS NOT NULL),
    CONSTRAINT api_keys_ip_limit CHECK (cardinality(allowed_ips) <= 5)
);
CREATE INDEX api_keys_user ON api_keys (user_id) WHERE status <> 'deleted';
CREATE INDEX api_keys_deleted_at ON api_keys (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE key_confirmations (
    id            bigserial PRIMARY KEY,
    key_id        text NOT NULL REFERENCES api_keys (key_id),
    token_hash    bytea NOT NULL UNIQUE,         -- SHA-256 of the emailed link's token
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    superseded_at timestamptz                    -- set when a newer email is sent for the same key
);
CREATE INDEX key_confirmations_key ON key_confirmations (key_id);

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    user_id     bigint REFERENCES users (id),
    actor       text NOT NULL,                   -- 'user:<id>', 'ops', 'gateway'
    action      text NOT NULL,                   -- key.created, key.confirmed, key.deleted, login, ...
    key_id      text,
    client_ip   inet,
    request_id  text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_user_at ON audit_log (user_id, at DESC);
CREATE INDEX audit_log_key ON audit_log (key_id) WHERE key_id IS NOT NULL;
CREATE INDEX audit_log_request ON audit_log (request_id) WHERE request_id IS NOT NULL;
