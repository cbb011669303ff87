-- Coded and sampled results (issue 8, next device classes). A urine test pad ("2+") or an ECG
-- rhythm is a code, not a number (FHIR valueCodeableConcept); a one-lead ECG is a waveform
-- (FHIR valueSampledData: origin, period, factor, data), stored as one row, never a row per
-- sample. Both are jsonb in the canonical model's own shape (adapters/model.py Coded, Sampled).
-- A row now carries exactly one of value, absent_reason, value_code and sampled; existing rows
-- hold value or absent_reason only, so they satisfy the wider check.
ALTER TABLE observations ADD COLUMN value_code jsonb;
ALTER TABLE observations ADD COLUMN sampled jsonb;
ALTER TABLE observations DROP CONSTRAINT observations_check;
ALTER TABLE observations ADD CONSTRAINT observations_one_result
    CHECK (num_nonnulls(value, absent_reason, value_code, sampled) = 1);
