-- Data lifecycle: the record of retention runs, raw payloads that retention may remove, and
-- the daily aggregates per patient and metric (see provisioning/retention.py).

-- One row per retention run that removed (or tried to remove) data. removed maps each
-- principal to what went, per table: {"20": {"observations": 120, "dead_letter_payloads": 3,
-- "event_raw_payloads": 0, ...}}; error is set when the run stopped part-way (what it
-- removed before that is committed and counted).
CREATE TABLE retention_runs (
    id                 bigserial PRIMARY KEY,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz NOT NULL,
    reference_time     timestamptz NOT NULL,
    removed            jsonb NOT NULL CHECK (jsonb_typeof(removed) = 'object'),
    partitions_dropped text[] NOT NULL DEFAULT '{}',
    error              text
);
CREATE INDEX retention_runs_started ON retention_runs (started_at DESC);

-- A dead letter outlives its payload: its reason, detail, topic, count and the payload's
-- SHA-256 stay as operational evidence (and keep a redelivery from adding a second row), only
-- the bytes go once the principal's raw_payload_retention_days have passed.
ALTER TABLE dead_letters ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE dead_letters ADD COLUMN payload_removed_at timestamptz;
-- Retention looks for payloads still kept; the index shrinks as they are removed.
CREATE INDEX dead_letters_payload_kept ON dead_letters (principal_code, last_seen)
    WHERE payload IS NOT NULL;
-- SCAIP and DC-09 events keep the message's own fields under data.raw; retention strips them.
CREATE INDEX events_raw_kept ON events (principal_code, received_at) WHERE data ? 'raw';

-- Daily aggregates per patient and metric over UTC days. Readings without a patient or
-- without a value (an absent_reason) are not aggregated. A TimescaleDB continuous aggregate
-- (kept fresh by its policy) where observations is a hypertable without row security;
-- otherwise a materialised view with the unique index REFRESH ... CONCURRENTLY needs,
-- refreshed by the housekeeping job. TimescaleDB refuses a continuous aggregate on a
-- hypertable with row security ("cannot create continuous aggregate on hypertable with row
-- security"), and migration 0009 turns row security on for observations, so as things stand
-- the materialised view serves on TimescaleDB too (it reads the hypertable like any table).
-- Both offer the same columns through observation_daily_scoped.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND NOT (SELECT relrowsecurity FROM pg_class WHERE oid = 'observations'::regclass)
    THEN
        EXECUTE $sql$
            CREATE MATERIALIZED VIEW observation_daily WITH (timescaledb.continuous) AS
            SELECT principal_code, patient_key, code, unit,
                   time_bucket(interval '1 day', ts) AS bucket,
                   count(value) AS n, min(value) AS min, max(value) AS max,
                   avg(value) AS avg, min(ts) AS first_ts, max(ts) AS last_ts
            FROM observations
            WHERE patient_key IS NOT NULL AND value IS NOT NULL
            GROUP BY principal_code, patient_key, code, unit, bucket
            WITH NO DATA
        $sql$;
        PERFORM add_continuous_aggregate_policy('observation_daily',
            start_offset => interval '7 days', end_offset => interval '1 hour',
            schedule_interval => interval '1 hour');
        EXECUTE $sql$
            CREATE VIEW observation_daily_scoped WITH (security_barrier) AS
            SELECT principal_code, patient_key, code, unit,
                   (bucket AT TIME ZONE 'UTC')::date AS day,
                   n, min, max, avg, first_ts, last_ts
            FROM observation_daily
            WHERE principal_code = current_setting('aidlink.principal', true)
        $sql$;
    ELSE
        EXECUTE $sql$
            CREATE MATERIALIZED VIEW observation_daily AS
            SELECT principal_code, patient_key, code, unit,
                   (ts AT TIME ZONE 'UTC')::date AS day,
                   count(*) AS n, min(value) AS min, max(value) AS max,
                   avg(value) AS avg, min(ts) AS first_ts, max(ts) AS last_ts
            FROM observations
            WHERE patient_key IS NOT NULL AND value IS NOT NULL
            GROUP BY principal_code, patient_key, code, unit, (ts AT TIME ZONE 'UTC')::date
            WITH DATA
        $sql$;
        CREATE UNIQUE INDEX observation_daily_key
            ON observation_daily (principal_code, patient_key, code, unit, day);
        EXECUTE $sql$
            CREATE VIEW observation_daily_scoped WITH (security_barrier) AS
            SELECT principal_code, patient_key, code, unit, day,
                   n, min, max, avg, first_ts, last_ts
            FROM observation_daily
            WHERE principal_code = current_setting('aidlink.principal', true)
        $sql$;
    END IF;
END $$;

-- A materialised view cannot have row-level security, so the API role gets no grant on
-- observation_daily itself, only on the scoped view, which runs with its owner's rights and
-- shows the rows of the principal the request set in aidlink.principal (none when unset).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aidlink_api') THEN
        GRANT SELECT ON observation_daily_scoped TO aidlink_api;
    END IF;
END $$;
