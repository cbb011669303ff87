-- Observations, one row per measured value. ts is the time column: the device's
-- measured_at when the payload carries one, else the hub's received-at, else the moment the
-- gateway received the message. The primary key (device_id, code, ts) is the natural key, so
-- a redelivered message is stored once.
CREATE TABLE observations (
    ts             timestamptz NOT NULL,
    device_id      text NOT NULL,
    code           text NOT NULL,
    principal_code text NOT NULL,
    patient_key    text,
    mdc            integer,
    value          numeric,
    unit           text NOT NULL,
    measured_at    timestamptz,
    absent_reason  text,
    flags          text[] NOT NULL DEFAULT '{}',
    panel          text,
    device_user    smallint,
    channel        text NOT NULL,
    received_at    timestamptz NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, code, ts),
    CHECK ((value IS NULL) <> (absent_reason IS NULL))
) {partitioning};
CREATE INDEX observations_patient ON observations (principal_code, patient_key, ts DESC);
