-- The planned end of an assignment: the last day the prescriber means the patient to keep the
-- device (NULL: open-ended). valid_to stays the actual end, set when the device is returned;
-- a device still out after its planned end shows in the overdue report. Days are the devices
-- centre's calendar (Europe/Stockholm), as the service's "today" is, so an assignment that
-- starts today may end today.
ALTER TABLE assignments ADD COLUMN planned_until date;
ALTER TABLE assignments ADD CONSTRAINT assignments_planned_until_after_start
    CHECK (planned_until IS NULL
           OR planned_until >= (valid_from AT TIME ZONE 'Europe/Stockholm')::date);
CREATE INDEX assignments_planned_open ON assignments (planned_until)
    WHERE valid_to IS NULL AND planned_until IS NOT NULL;
