-- Principals join the shared devices centre gradually, and new device models are piloted
-- before they are rolled out (provisioning/participation.py, provisioning/pilots.py).

-- From when a principal takes part: NULL while it is registered but not (yet) participating.
-- The default keeps every existing way of adding a principal "participating from now".
ALTER TABLE principals ADD COLUMN participates_from timestamptz DEFAULT now();
-- When and by whom the principal was set up to take part (its policy and CA made).
ALTER TABLE principals ADD COLUMN joined_at timestamptz DEFAULT now();
ALTER TABLE principals ADD COLUMN joined_by text;
-- Principals registered before participation existed have taken part since they were added.
UPDATE principals SET participates_from = created_at, joined_at = created_at,
                      joined_by = 'migration 0014';
-- Joining is one act: a date without a record of the join (or the reverse) is a bug.
ALTER TABLE principals ADD CONSTRAINT principals_joined
    CHECK ((participates_from IS NULL) = (joined_at IS NULL));

-- The stage of a device model; a model without a row is in general use. A pilot is limited to
-- the named principals and/or units (the prescribing and paying units of assignments and
-- licences) and to at most max_devices devices in service.
CREATE TABLE model_stages (
    model       text PRIMARY KEY CHECK (length(model) BETWEEN 1 AND 64),
    stage       text NOT NULL CHECK (stage IN ('pilot', 'general')),
    principals  text[] NOT NULL DEFAULT '{}',
    units       text[] NOT NULL DEFAULT '{}',
    max_devices integer CHECK (max_devices IS NULL OR max_devices > 0),
    -- When the current stage began: the pilot report's period starts here.
    since       timestamptz NOT NULL DEFAULT now(),
    changed_by  text NOT NULL,
    CHECK (stage = 'general' OR cardinality(principals) + cardinality(units) > 0)
);

-- Every change of a model's stage, oldest first: who piloted or promoted it, and why.
CREATE TABLE model_stage_history (
    id      bigserial PRIMARY KEY,
    model   text NOT NULL REFERENCES model_stages (model),
    at      timestamptz NOT NULL DEFAULT now(),
    stage   text NOT NULL CHECK (stage IN ('pilot', 'general')),
    actor   text NOT NULL,
    reason  text,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX model_stage_history_model ON model_stage_history (model, id);

-- The pilot report counts a model's devices and their returns.
CREATE INDEX devices_model ON devices (model);
