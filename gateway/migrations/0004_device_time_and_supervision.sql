-- Device time, supervision and stored-record replay.
ALTER TABLE principals ADD COLUMN zone text NOT NULL DEFAULT 'Europe/Stockholm';

-- The account number an SIA DC-09 alarm unit reports under (unique across the receiver).
ALTER TABLE devices ADD COLUMN alarm_account text UNIQUE;
ALTER TABLE devices ADD COLUMN firmware_version text;

ALTER TABLE observations ADD COLUMN sequence integer;
-- Seconds the device's clock was off when the reading was corrected for it (null: not corrected).
ALTER TABLE observations ADD COLUMN clock_offset_s double precision;

-- What the gateway last saw of each device: supervision (online/offline) and clock offset.
CREATE TABLE device_state (
    device_id        text PRIMARY KEY REFERENCES devices (id),
    last_seen        timestamptz NOT NULL,
    online           boolean NOT NULL DEFAULT true,
    -- device clock minus true time, in seconds, from its last Date Time (0x2A08) report
    clock_offset_s   double precision,
    clock_checked_at timestamptz
);

-- The highest stored-record sequence number per device and channel (glucose meters), so the
-- gateway can ask the hub for the records after it, and what it last asked for.
CREATE TABLE record_sequences (
    device_id       text NOT NULL REFERENCES devices (id),
    channel         text NOT NULL,
    last_sequence   integer NOT NULL,
    requested_after integer,
    requested_at    timestamptz,
    PRIMARY KEY (device_id, channel)
);
