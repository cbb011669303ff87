-- The gateway keeps the registry facts it needs for every message (devices, their principals'
-- zones, pairings, assignments) between batches instead of querying them for each batch
-- (gateway/ingest/registry_cache.py). Every statement that changes one of those tables bumps
-- one version number in the same transaction; the gateway reads the number at the start of a
-- batch and drops what it holds when it moved. Being a row, the bump becomes visible exactly
-- when the change does (a sequence would show it before the change commits).
CREATE TABLE registry_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint NOT NULL
);
INSERT INTO registry_version (version) VALUES (0);

-- SECURITY DEFINER: the API's roles change devices and assignments but own no table.
CREATE FUNCTION aidlink_registry_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE registry_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON principals
    FOR EACH STATEMENT EXECUTE FUNCTION aidlink_registry_changed();
CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION aidlink_registry_changed();
CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pairings
    FOR EACH STATEMENT EXECUTE FUNCTION aidlink_registry_changed();
CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON assignments
    FOR EACH STATEMENT EXECUTE FUNCTION aidlink_registry_changed();
