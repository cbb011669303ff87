-- Events, dead letters and the patient-data access log. Observations are created by
-- migration 3 (a hypertable or native partitions, depending on the server).
CREATE TABLE events (
    id             bigserial PRIMARY KEY,
    occurred_at    timestamptz NOT NULL,
    device_id      text NOT NULL,
    principal_code text NOT NULL,
    patient_key    text,
    type           text NOT NULL,
    data           jsonb NOT NULL DEFAULT '{}',
    channel        text NOT NULL,
    device_time    boolean NOT NULL,
    received_at    timestamptz NOT NULL,
    -- The natural key: a redelivered message maps onto the same row.
    UNIQUE (device_id, type, occurred_at)
);
CREATE INDEX events_principal_time ON events (principal_code, occurred_at DESC);

CREATE TABLE dead_letters (
    id             bigserial PRIMARY KEY,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    times          integer NOT NULL DEFAULT 1,
    topic          text NOT NULL,
    client_id      text,
    device_id      text,
    principal_code text,
    channel        text,
    payload        bytea NOT NULL,
    payload_sha256 bytea NOT NULL,
    reason         text NOT NULL,
    detail         text NOT NULL,
    -- A redelivered (or repeated) bad message counts up instead of adding a row.
    UNIQUE (topic, payload_sha256)
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, last_seen DESC);

CREATE TABLE access_log (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    principal_code text NOT NULL,
    client         text NOT NULL,
    role           text NOT NULL,
    end_user       text,
    patient_key    text NOT NULL,
    action         text NOT NULL,
    purpose        text NOT NULL,
    detail         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX access_log_patient ON access_log (principal_code, patient_key, at DESC);
