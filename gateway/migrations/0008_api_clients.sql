-- API clients (OAuth2 client credentials, RFC 6749 §4.4) and the keys that sign their tokens.

-- One client per calling system (an EHR, an alarm receiver, a technician's tool), registered
-- for one principal with one role and the scopes it may ask for. Only a hash of the secret is
-- kept: "scrypt$<n>$<r>$<p>$<base64 salt>$<base64 hash>". A disabled client keeps its row, so
-- the access log's client names stay explained.
CREATE TABLE api_clients (
    client_id      text PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$'),
    principal_code text NOT NULL REFERENCES principals (code),
    role           text NOT NULL
                   CHECK (role IN ('clinician', 'technician', 'auditor', 'admin')),
    scopes         text[] NOT NULL
                   CHECK (cardinality(scopes) >= 1
                          AND scopes <@ ARRAY['observations', 'events', 'devices',
                                              'provisioning', 'audit']::text[]),
    secret_hash    text NOT NULL CHECK (secret_hash LIKE 'scrypt$%'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    disabled_at    timestamptz
);
CREATE INDEX api_clients_principal ON api_clients (principal_code, client_id);

-- ES256 (P-256) token signing keys. The private key is a PKCS#8 PEM encrypted under a key
-- derived from the server secret; the CHECK refuses a clear key even from a careless caller.
-- public_jwk is the RFC 7517 JWK the JWKS publishes; kid is its RFC 7638 thumbprint. One key
-- is current (retired_at NULL); retired keys stay for the lifetime of their last tokens.
CREATE TABLE token_signing_keys (
    kid             text PRIMARY KEY,
    private_key_pem bytea NOT NULL
                    CHECK (position('-----BEGIN ENCRYPTED PRIVATE KEY-----'::bytea
                                    IN private_key_pem) = 1),
    public_jwk      jsonb NOT NULL
                    CHECK (public_jwk ->> 'kty' = 'EC' AND public_jwk ->> 'crv' = 'P-256'
                           AND public_jwk ->> 'kid' = kid AND NOT public_jwk ? 'd'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz,
    CHECK (retired_at IS NULL OR retired_at >= created_at)
);
CREATE UNIQUE INDEX token_signing_keys_one_current
    ON token_signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;
