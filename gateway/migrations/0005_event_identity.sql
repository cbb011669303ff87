-- Two distinct events of one type from one device can share a second (two DC-09 frames, two
-- SCAIP alarms). The device's own identity of the event (SCAIP ref, DC-09 or document
-- sequence number) joins the natural key; '' when the device gives none.
ALTER TABLE events ADD COLUMN ref text NOT NULL DEFAULT '';
ALTER TABLE events DROP CONSTRAINT events_device_id_type_occurred_at_key;
ALTER TABLE events ADD CONSTRAINT events_natural_key UNIQUE (device_id, type, occurred_at, ref);
