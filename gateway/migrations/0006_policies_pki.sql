-- Per-principal security policies (every version kept) and the PKI: CAs and device certificates.

-- The current policy of a principal is its highest version; older versions stay for audit.
CREATE TABLE policies (
    principal_code text NOT NULL REFERENCES principals (code),
    version        integer NOT NULL CHECK (version >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    document       jsonb NOT NULL CHECK (jsonb_typeof(document) = 'object'),
    PRIMARY KEY (principal_code, version)
);

-- One root (principal_code NULL) and one intermediate per principal. The private key is a
-- PKCS#8 PEM encrypted with the operator's passphrase; the CHECK refuses a clear key even
-- from a careless caller.
CREATE TABLE certificate_authorities (
    id                bigserial PRIMARY KEY,
    principal_code    text REFERENCES principals (code),
    certificate_pem   text NOT NULL,
    encrypted_key_pem text NOT NULL
                      CHECK (encrypted_key_pem LIKE '-----BEGIN ENCRYPTED PRIVATE KEY-----%'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    not_after         timestamptz NOT NULL,
    -- The number of the last CRL signed (CRLs carry an increasing number) and when it was
    -- signed: a CRL past its next update makes the broker refuse the CA's every device.
    crl_number        bigint NOT NULL DEFAULT 0,
    crl_last_update   timestamptz
);
CREATE UNIQUE INDEX certificate_authorities_one_root
    ON certificate_authorities ((principal_code IS NULL)) WHERE principal_code IS NULL;
CREATE UNIQUE INDEX certificate_authorities_one_per_principal
    ON certificate_authorities (principal_code) WHERE principal_code IS NOT NULL;

-- Device certificates; the server keeps no device private key. serial is lower-case hex.
CREATE TABLE certificates (
    serial            text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]{1,40}$'),
    device_id         text NOT NULL REFERENCES devices (id),
    principal_code    text NOT NULL REFERENCES principals (code),
    subject_cn        text NOT NULL,
    not_before        timestamptz NOT NULL,
    not_after         timestamptz NOT NULL CHECK (not_after > not_before),
    key_algorithm     text NOT NULL,
    pem               text NOT NULL,
    issued_at         timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    revocation_reason text,
    replaced_by       text REFERENCES certificates (serial),
    CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
);
CREATE INDEX certificates_device ON certificates (device_id, issued_at DESC);
CREATE INDEX certificates_revoked ON certificates (principal_code) WHERE revoked_at IS NOT NULL;
