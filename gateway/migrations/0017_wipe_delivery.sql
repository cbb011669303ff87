-- Delivery of the wipe command (aidlink/v1/{client_id}/down/wipe, QoS 1, retained): a request
-- is published by whatever starts reconditioning when it reaches the broker, else by the
-- downlink round beside the gateway. published_at is when the broker accepted the retained
-- command; cleared_at is when the empty retained payload that removes it was accepted, after
-- the confirmation (or once the device left reconditioning without one), so a reused device
-- never sees an old wipe.
ALTER TABLE wipe_requests ADD COLUMN published_at timestamptz;
ALTER TABLE wipe_requests ADD COLUMN cleared_at timestamptz;
ALTER TABLE wipe_requests ADD CONSTRAINT wipe_requests_cleared_after_published
    CHECK (cleared_at IS NULL OR published_at IS NOT NULL);
-- Requests made before this migration were never published retained, so there is nothing to
-- clear; an unconfirmed one stays pending and is published by the next round.
UPDATE wipe_requests SET published_at = requested_at, cleared_at = requested_at
    WHERE confirmed_at IS NOT NULL;
CREATE INDEX wipe_requests_undelivered ON wipe_requests (id)
    WHERE published_at IS NULL OR cleared_at IS NULL;
