-- Row-level security: the second wall behind the API's own scoping.
--
-- The API reads patient data as aidlink_api and the access log as aidlink_audit. Neither owns
-- a table, and every protected table FORCEs row security, so even a query that forgot its
-- "principal_code = ..." clause sees only the principal the request set with
-- set_config('aidlink.principal', ..., true) (see gateway/api/scoping.py). An unset principal
-- (NULL, or '' after a transaction that set it ended) matches no row: codes are never empty.
--
-- The owner (the user that migrates, which the gateway and provisioning connect as) keeps
-- full access through its own policies: FORCE makes the owner subject to row security too,
-- so without them ingestion, onboarding and transfers between principals would stop.

-- Roles belong to the whole cluster, and many databases (tests) may migrate at once on one
-- server: create them only if missing, and treat a concurrent creation as done.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['aidlink_api', 'aidlink_audit'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOBYPASSRLS', name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
        -- The owner switches to these roles with SET LOCAL ROLE, which needs membership;
        -- from PostgreSQL 16 a membership may lack the SET option (a CREATEROLE user's
        -- implicit grant on the roles it creates does), so that is what counts there.
        IF NOT (CASE WHEN current_setting('server_version_num')::int >= 160000
                     THEN pg_has_role(current_user, name, 'SET')
                     ELSE pg_has_role(current_user, name, 'MEMBER') END) THEN
            EXECUTE format('GRANT %I TO %I', name, current_user);
        END IF;
    END LOOP;
END $$;

-- What the read routes need, and nothing else. Observations are read through the parent
-- (partitioned table or hypertable): PostgreSQL checks privileges and policies on the table
-- named in the query, so partitions and chunks made later need no grants of their own, and
-- the API roles cannot read a partition directly, past the parent's policies. Every other
-- table (device history and owners, certificates, policies, licences, dead letters, ...)
-- stays closed to them: the provisioning routes work on the owner's connection.
GRANT SELECT ON principals, devices, pairings, assignments, device_state, observations, events
    TO aidlink_api;

-- The API only appends to the access log, and only the columns a read describes: the id and
-- time come from their defaults, so an entry cannot be backdated to fall out of retention.
GRANT INSERT (principal_code, client, role, end_user, patient_key, action, purpose, detail)
    ON access_log TO aidlink_api;
GRANT USAGE ON SEQUENCE access_log_id_seq TO aidlink_api;
GRANT SELECT ON access_log TO aidlink_audit;

ALTER TABLE principals ENABLE ROW LEVEL SECURITY;
ALTER TABLE principals FORCE ROW LEVEL SECURITY;
ALTER TABLE devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE devices FORCE ROW LEVEL SECURITY;
ALTER TABLE pairings ENABLE ROW LEVEL SECURITY;
ALTER TABLE pairings FORCE ROW LEVEL SECURITY;
ALTER TABLE assignments ENABLE ROW LEVEL SECURITY;
ALTER TABLE assignments FORCE ROW LEVEL SECURITY;
ALTER TABLE device_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE device_state FORCE ROW LEVEL SECURITY;
ALTER TABLE observations ENABLE ROW LEVEL SECURITY;
ALTER TABLE observations FORCE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE access_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_log FORCE ROW LEVEL SECURITY;

-- The owner: everything, as before this migration.
CREATE POLICY owner_all ON principals TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON devices TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON pairings TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON assignments TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON device_state TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON observations TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON events TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON access_log TO CURRENT_USER USING (true) WITH CHECK (true);

-- The API: the request's principal only.
CREATE POLICY api_principal ON principals FOR SELECT TO aidlink_api
    USING (code = current_setting('aidlink.principal', true));
CREATE POLICY api_principal ON devices FOR SELECT TO aidlink_api
    USING (principal_code = current_setting('aidlink.principal', true));
CREATE POLICY api_principal ON assignments FOR SELECT TO aidlink_api
    USING (principal_code = current_setting('aidlink.principal', true));
CREATE POLICY api_principal ON observations FOR SELECT TO aidlink_api
    USING (principal_code = current_setting('aidlink.principal', true));
CREATE POLICY api_principal ON events FOR SELECT TO aidlink_api
    USING (principal_code = current_setting('aidlink.principal', true));
-- Tables without a principal column belong to the principal of their device. The subquery
-- runs as aidlink_api, so the devices policy above limits it as well.
CREATE POLICY api_principal ON device_state FOR SELECT TO aidlink_api
    USING (EXISTS (SELECT 1 FROM devices d WHERE d.id = device_state.device_id
                   AND d.principal_code = current_setting('aidlink.principal', true)));
-- A pairing never crosses principals (lifecycle ends pairings before a transfer); both ends
-- are required all the same, so no half of another principal's pairing shows.
CREATE POLICY api_principal ON pairings FOR SELECT TO aidlink_api
    USING (EXISTS (SELECT 1 FROM devices d WHERE d.id = pairings.hub_id
                   AND d.principal_code = current_setting('aidlink.principal', true))
           AND EXISTS (SELECT 1 FROM devices d WHERE d.id = pairings.peripheral_id
                       AND d.principal_code = current_setting('aidlink.principal', true)));
-- Entries only for the request's own principal: a request cannot write into another's log.
CREATE POLICY api_append ON access_log FOR INSERT TO aidlink_api
    WITH CHECK (principal_code = current_setting('aidlink.principal', true));
CREATE POLICY audit_principal ON access_log FOR SELECT TO aidlink_audit
    USING (principal_code = current_setting('aidlink.principal', true));

-- The access log is evidence under the patient-data law (patientdatalagen): who read which
-- patient's data, when and why must stay as written for at least five years. The grants keep
-- the API from changing it; this trigger holds the owner (and retention jobs) to the same
-- rule: no update ever, no deletion of an entry younger than five years, no TRUNCATE. The log
-- references no reading, so retention of measurement data never touches it.
CREATE FUNCTION aidlink_access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'access_log is append-only: entry % may not be updated', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'access_log is append-only: TRUNCATE is refused; delete entries'
                        ' older than five years instead'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.at > now() - interval '5 years' THEN
        RAISE EXCEPTION 'access_log entry % is kept for five years (written %); it may be'
                        ' deleted after %', OLD.id, OLD.at, OLD.at + interval '5 years'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION aidlink_access_log_append_only();
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION aidlink_access_log_append_only();
-- The auditors' reads: by principal and client, newest first (by patient exists already).
CREATE INDEX access_log_client ON access_log (principal_code, client, at DESC);
