-- Key lifecycle: expiry, rolling, last use (time and client IP), allowed withdrawal
-- addresses with a cooldown, and hourly usage counts.

ALTER TABLE api_keys
    ADD COLUMN expires_at    timestamptz,                -- NULL: never (its own expiry, or a roll's overlap end)
    ADD COLUMN lifetime      double precision,           -- seconds from creation to its own expiry; rolls keep it
    ADD COLUMN changed_at    timestamptz,                -- last change a cached copy must learn of (roll, addresses)
    ADD COLUMN last_used_ip  inet,
    ADD COLUMN rolled_from   text REFERENCES api_keys (key_id),  -- the key this one replaces
    ADD COLUMN roll_overlap  double precision,           -- seconds the replaced key keeps working after confirmation
    ADD CONSTRAINT api_keys_roll_overlap CHECK (roll_overlap IS NULL OR roll_overlap >= 0),
    ADD CONSTRAINT api_keys_lifetime CHECK (lifetime IS NULL OR lifetime > 0);
CREATE INDEX api_keys_changed_at ON api_keys (changed_at) WHERE changed_at IS NOT NULL;

-- What an emailed key link confirms: a new key ('key', the default) or addresses added to a
-- live key ('addresses').
ALTER TABLE key_confirmations
    ADD COLUMN purpose text NOT NULL DEFAULT 'key' CHECK (purpose IN ('key', 'addresses'));

CREATE TABLE key_withdraw_addresses (
    key_id        text NOT NULL REFERENCES api_keys (key_id),
    address       text NOT NULL,
    added_at      timestamptz NOT NULL DEFAULT now(),
    effective_at  timestamptz,                           -- NULL: waits for its emailed confirmation
    confirmation_id bigint REFERENCES key_confirmations (id),
    PRIMARY KEY (key_id, address)
);

-- Requests per key, hour and outcome ('' forwarded or answered, else the gateway's error code),
-- added up in batches by the gateways and pruned after `usage_retention`.
CREATE TABLE key_usage_hourly (
    key_id    text NOT NULL,
    hour      timestamptz NOT NULL,
    code      text NOT NULL,
    requests  bigint NOT NULL,
    PRIMARY KEY (key_id, hour, code)
);
CREATE INDEX key_usage_hourly_hour ON key_usage_hourly (hour);
