-- The gateway looks up every assignment (open and closed) of the devices in a batch, to find
-- the patient at each reading's time; without this index that is a scan of all assignments.
CREATE INDEX IF NOT EXISTS assignments_device ON assignments (device_id, valid_from);
