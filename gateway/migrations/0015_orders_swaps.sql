-- Orders from the ordering portal (webSesam), imported as CSV, and the assignment that
-- delivered each one: the devices centre's lead time runs from ordered_at to fulfilled_at.
-- Swaps need no table of their own: a swap is two device_history rows and two assignments.

CREATE TABLE orders (
    -- The portal's order number is unique within a principal; keyed with the principal so
    -- that one principal's numbers neither collide with nor reveal another's.
    principal_code  text NOT NULL REFERENCES principals (code),
    order_id        text NOT NULL CHECK (order_id ~ '^[A-Za-z0-9._:/-]{1,64}$'),
    unit            text CHECK (length(unit) BETWEEN 1 AND 100),
    -- The patient's pseudonym within the principal (provisioning/patients.py), as on
    -- assignments: the portal's patient reference is never stored in clear.
    patient_key     text NOT NULL,
    -- What was ordered: a device model, a Sesam article number, or both (both must match).
    model           text CHECK (length(model) BETWEEN 1 AND 64),
    article_number  text CHECK (length(article_number) BETWEEN 1 AND 32),
    ordered_at      timestamptz NOT NULL,
    imported_at     timestamptz NOT NULL DEFAULT now(),
    imported_by     text NOT NULL,
    -- The delivery: the assignment that put a device at the patient, and when.
    device_id       text REFERENCES devices (id),
    assignment_id   bigint UNIQUE REFERENCES assignments (id),
    fulfilled_at    timestamptz,
    fulfilled_by    text,
    PRIMARY KEY (principal_code, order_id),
    CHECK (model IS NOT NULL OR article_number IS NOT NULL),
    CHECK ((assignment_id IS NULL) = (device_id IS NULL)
           AND (assignment_id IS NULL) = (fulfilled_at IS NULL)
           AND (assignment_id IS NULL) = (fulfilled_by IS NULL)),
    CHECK (fulfilled_at IS NULL OR fulfilled_at >= ordered_at)
);
-- Matching an assignment to the patient's open orders, oldest first.
CREATE INDEX orders_open ON orders (principal_code, patient_key, ordered_at)
    WHERE assignment_id IS NULL;
-- The lead-time report, by principal and time.
CREATE INDEX orders_principal_time ON orders (principal_code, ordered_at);

-- Row-level security as on the other principal tables (migration 0009): forced, the owner
-- keeps everything, and the API role would see the request's principal only. The
-- provisioning routes read orders on the owner's connection, so aidlink_api gets no grant:
-- the policy is the wall for the day a read route is given one.
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON orders TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY api_principal ON orders FOR SELECT TO aidlink_api
    USING (principal_code = current_setting('aidlink.principal', true));
