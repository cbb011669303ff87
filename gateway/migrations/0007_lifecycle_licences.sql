-- Device lifecycle (return, reconditioning with a confirmed wipe, retirement, transfer between
-- principals), Sesam traceability, and licences with their terms.

-- Whose a device was, and when: a transfer changes devices.principal_code, and reports and
-- isolation must still tell which principal owned the device at any earlier moment.
CREATE TABLE device_owners (
    id             bigserial PRIMARY KEY,
    device_id      text NOT NULL REFERENCES devices (id),
    principal_code text NOT NULL REFERENCES principals (code),
    valid_from     timestamptz NOT NULL,
    valid_to       timestamptz,
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE UNIQUE INDEX device_owners_one_open ON device_owners (device_id) WHERE valid_to IS NULL;
CREATE INDEX device_owners_principal ON device_owners (principal_code, valid_from);

-- Before this migration no device could change owner, so its owner has always been this one.
INSERT INTO device_owners (device_id, principal_code, valid_from)
SELECT id, principal_code, created_at FROM devices;

-- A trigger rather than the service layer keeps the record complete whichever code onboards
-- a device or changes its owner. clock_timestamp(), not now(): an onboarding and a transfer
-- in one transaction still get ordered periods.
CREATE FUNCTION aidlink_track_owner() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := clock_timestamp();
BEGIN
    IF TG_OP = 'INSERT' THEN
        at := NEW.created_at;
    ELSE
        UPDATE device_owners SET valid_to = at WHERE device_id = NEW.id AND valid_to IS NULL;
    END IF;
    INSERT INTO device_owners (device_id, principal_code, valid_from)
    VALUES (NEW.id, NEW.principal_code, at);
    RETURN NULL;
END $$;
CREATE TRIGGER devices_owner_insert AFTER INSERT ON devices
    FOR EACH ROW EXECUTE FUNCTION aidlink_track_owner();
CREATE TRIGGER devices_owner_change AFTER UPDATE OF principal_code ON devices
    FOR EACH ROW WHEN (OLD.principal_code IS DISTINCT FROM NEW.principal_code)
    EXECUTE FUNCTION aidlink_track_owner();

-- Each history row carries the principal that owned the device when it happened, so a
-- device's life can be split by owner after a transfer.
ALTER TABLE device_history ADD COLUMN principal_code text REFERENCES principals (code);
UPDATE device_history h SET principal_code = d.principal_code FROM devices d
WHERE d.id = h.device_id;
-- Rows written without a principal (provisioning.service) take the owner at insert time.
CREATE FUNCTION aidlink_history_principal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.principal_code IS NULL THEN
        SELECT principal_code INTO NEW.principal_code FROM devices WHERE id = NEW.device_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER device_history_principal BEFORE INSERT ON device_history
    FOR EACH ROW EXECUTE FUNCTION aidlink_history_principal();
ALTER TABLE device_history ALTER COLUMN principal_code SET NOT NULL;
CREATE INDEX device_history_principal ON device_history (principal_code, device_id, id);

-- Set when a device's credentials were revoked and it went back into stock (reconditioned or
-- transferred): it must get new credentials before it is used again.
ALTER TABLE devices ADD COLUMN needs_credentials boolean NOT NULL DEFAULT false;

-- A wipe the device must confirm before reconditioning can finish; the nonce ties the
-- device's confirmation to this request, so an old or forged confirmation does not count.
CREATE TABLE wipe_requests (
    id           bigserial PRIMARY KEY,
    device_id    text NOT NULL REFERENCES devices (id),
    nonce        text NOT NULL UNIQUE,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    requested_by text NOT NULL,
    -- the device's own time of the wipe, and who recorded its confirmation, and when
    confirmed_at timestamptz,
    confirmed_by text,
    recorded_at  timestamptz,
    CHECK ((confirmed_at IS NULL) = (confirmed_by IS NULL))
);
CREATE INDEX wipe_requests_device ON wipe_requests (device_id, id);

CREATE TABLE vendors (
    code text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9_-]{1,32}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200)
);

-- Products by their Sesam article number.
CREATE TABLE products (
    article_number text PRIMARY KEY CHECK (article_number ~ '^[A-Za-z0-9._/-]{1,32}$'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    product_class  text NOT NULL CHECK (product_class ~ '^[a-z][a-z0-9_]{0,39}$'),
    vendor_code    text NOT NULL REFERENCES vendors (code)
);

-- Traceability with Sesam: article number and the device's individual number.
ALTER TABLE devices ADD COLUMN article_number text REFERENCES products (article_number);
ALTER TABLE devices ADD COLUMN individual_number text
    CHECK (individual_number ~ '^[A-Za-z0-9._/-]{1,32}$');
ALTER TABLE devices ADD CONSTRAINT devices_sesam_key UNIQUE (article_number, individual_number);
ALTER TABLE devices ADD CONSTRAINT devices_individual_needs_article
    CHECK (individual_number IS NULL OR article_number IS NOT NULL);

-- What a licence of a product costs. price is per period; a device not included costs
-- device_price on top: per period when rented, once when bought.
CREATE TABLE licence_terms (
    code            text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9_-]{1,32}$'),
    article_number  text NOT NULL REFERENCES products (article_number),
    period          text NOT NULL CHECK (period IN ('monthly', 'yearly')),
    price           numeric(12, 2) NOT NULL CHECK (price >= 0),
    device_included boolean NOT NULL,
    acquisition     text NOT NULL CHECK (acquisition IN ('rent', 'buy')),
    device_price    numeric(12, 2) CHECK (device_price >= 0),
    CHECK (device_included = (device_price IS NULL))
);

-- A licence held by one device from start_date to end_date, both days included; paid by a
-- principal, optionally one of its units (cost centre).
CREATE TABLE licences (
    id             bigserial PRIMARY KEY,
    terms_code     text NOT NULL REFERENCES licence_terms (code),
    device_id      text NOT NULL REFERENCES devices (id),
    principal_code text NOT NULL REFERENCES principals (code),
    unit           text CHECK (length(unit) BETWEEN 1 AND 64),
    start_date     date NOT NULL,
    end_date       date,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (end_date IS NULL OR end_date >= start_date)
);
CREATE INDEX licences_device ON licences (device_id, start_date);
CREATE INDEX licences_principal ON licences (principal_code, start_date);
