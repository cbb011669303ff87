-- Principals, devices, hub pairings and patient assignments.
CREATE TABLE principals (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9_-]{1,32}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    device_auth text NOT NULL DEFAULT 'mtls' CHECK (device_auth IN ('mtls', 'password')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id                 text PRIMARY KEY,
    principal_code     text NOT NULL REFERENCES principals (code),
    client_id          text NOT NULL UNIQUE,
    model              text NOT NULL,
    serial             text NOT NULL,
    state              text NOT NULL DEFAULT 'in_stock'
                       CHECK (state IN ('in_stock', 'assigned', 'returned', 'reconditioning',
                                        'retired')),
    -- Mosquitto's PBKDF2-SHA512 form ($7$...), never the password itself.
    mqtt_password_hash text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model, serial)
);

-- A peripheral (a Bluetooth cuff) publishes through one hub at a time.
CREATE TABLE pairings (
    id            bigserial PRIMARY KEY,
    hub_id        text NOT NULL REFERENCES devices (id),
    peripheral_id text NOT NULL REFERENCES devices (id),
    paired_at     timestamptz NOT NULL DEFAULT now(),
    unpaired_at   timestamptz,
    CHECK (hub_id <> peripheral_id)
);
CREATE UNIQUE INDEX pairings_one_hub ON pairings (peripheral_id) WHERE unpaired_at IS NULL;

-- patient_key is a keyed hash of the patient reference (never the personnummer in clear).
CREATE TABLE assignments (
    id               bigserial PRIMARY KEY,
    device_id        text NOT NULL REFERENCES devices (id),
    principal_code   text NOT NULL REFERENCES principals (code),
    patient_key      text NOT NULL,
    basis            text NOT NULL CHECK (basis IN ('HSL', 'SoL')),
    prescribing_unit text,
    valid_from       timestamptz NOT NULL DEFAULT now(),
    valid_to         timestamptz,
    assigned_by      text NOT NULL,
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE UNIQUE INDEX assignments_one_open ON assignments (device_id) WHERE valid_to IS NULL;
CREATE INDEX assignments_patient ON assignments (principal_code, patient_key);

-- Who did what to a device, oldest first: the device's history.
CREATE TABLE device_history (
    id          bigserial PRIMARY KEY,
    device_id   text NOT NULL REFERENCES devices (id),
    at          timestamptz NOT NULL DEFAULT now(),
    action      text NOT NULL,
    actor       text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX device_history_device ON device_history (device_id, id);
