-- The last CRL each CA signed (DER) and its next update, so that a CRL can be handed out on
-- request without re-signing it (and bumping crl_number) every time. Both are NULL until the
-- CA signs its first CRL; crl_last_update already says when that CRL was signed.
ALTER TABLE certificate_authorities ADD COLUMN crl_der bytea;
ALTER TABLE certificate_authorities ADD COLUMN crl_next_update timestamptz;
ALTER TABLE certificate_authorities ADD CONSTRAINT certificate_authorities_crl_complete
    CHECK ((crl_der IS NULL) = (crl_next_update IS NULL));
