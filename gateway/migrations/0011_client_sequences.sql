-- Transport gap detection: hubs number their MQTT publishes with the MQTT 5 user property
-- `seq` (one counter per client). The gateway keeps the highest number it has stored per
-- client, and the ranges it never received, so a message the broker lost (a crash between
-- its PUBACK and its next persistence snapshot) becomes an `ingest.gap` event.
CREATE TABLE client_sequences (
    client_id  text PRIMARY KEY,
    last_seq   bigint NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Ranges of numbers skipped and not (yet) received. A late arrival inside a range splits it
-- and is reported as `ingest.gap_filled`, so a redelivery that overtook nothing stays silent.
CREATE TABLE client_sequence_gaps (
    client_id text NOT NULL,
    seq_from  bigint NOT NULL,
    seq_to    bigint NOT NULL,
    opened_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, seq_from),
    CHECK (seq_from <= seq_to)
);
