"""``aidlink bench provision``: EC P-256 device certificates issued from CSRs, per certificate.

Two series, both over the same pre-made CSRs (key generation is the device's work, not ours):
- ``issue_ms``: ``pki.issue`` end to end against a real PostgreSQL, durable (fsync on) as in
  production: CSR check, policy, CA key decryption, signing, the certificate and history rows,
  the commit;
- ``signing_ms``: the cryptography alone: CSR parse and signature check, then building and
  signing the certificate with the intermediate CA's key, already decrypted.
The first issuance, which creates the root and the principal's intermediate, is timed apart.
"""

from __future__ import annotations

import json
import platform
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cryptography
import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import db
from gateway.services.postgres import PostgresProcess
from provisioning import ca, pki, service
from provisioning.policy import current_policy

TARGET_MS = 5.0
PRINCIPAL = "20"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _figures(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "p99": round(_percentile(values, 0.99), 3),
            "mean": round(statistics.fmean(values), 3), "max": round(max(values), 3)}


def _csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
        key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def _measure(url: str, count: int) -> dict[str, Any]:
    db.migrate(url)
    # A throwaway CA: its key dies with the bench database.
    passphrase = secrets.token_urlsafe(32).encode()
    with psycopg.connect(url, autocommit=True) as conn:
        service.add_principal(conn, PRINCIPAL, "Region Dalarna")
        devices = [str(service.onboard_device(conn, principal=PRINCIPAL, model="sim-bpm",
                                              serial=f"bench-{n}", actor="bench")["device_id"])
                   for n in range(count + 1)]
        csrs = [_csr() for _ in devices]
        started = time.perf_counter()
        pki.issue(conn, passphrase, device_id=devices[0], principal=PRINCIPAL,
                  client_id=devices[0], csr_pem=csrs[0], actor="bench")
        setup_ms = (time.perf_counter() - started) * 1000
        issue_ms = []
        for device, csr in zip(devices[1:], csrs[1:], strict=True):
            started = time.perf_counter()
            pki.issue(conn, passphrase, device_id=device, principal=PRINCIPAL, client_id=device,
                      csr_pem=csr, actor="bench")
            issue_ms.append((time.perf_counter() - started) * 1000)
        # The signing step in isolation goes through pki's internals on purpose: the same
        # code as issue(), minus the database and the CA key decryption.
        authority = ca._load(conn, passphrase, PRINCIPAL)
        assert authority is not None
        policy = current_policy(conn, PRINCIPAL)
        signing_ms = []
        for device, csr in zip(devices[1:], csrs[1:], strict=True):
            started = time.perf_counter()
            now = datetime.now(UTC)
            public_key, _ = pki._subject_key(policy, device, csr)
            ca.leaf(authority, public_key, device, now - ca.BACKDATE,
                      now + timedelta(days=policy.certificate_lifetime_days))
            signing_ms.append((time.perf_counter() - started) * 1000)
        row = conn.execute("SELECT count(*) FROM certificates").fetchone()
    return {"stored": 0 if row is None else int(row[0]), "ca_setup_ms": round(setup_ms, 3),
            "issue_ms": _figures(issue_ms), "signing_ms": _figures(signing_ms)}


def run_provision_bench(out: Path, count: int = 500, *,
                        database_url: str | None = None) -> dict[str, Any]:
    """Issue ``count`` EC P-256 certificates from CSRs; write and return the timings.

    Without ``database_url`` it starts a throwaway durable PostgreSQL of its own; a given
    database must be empty.
    """
    if count < 1:
        raise ValueError(f"count must be positive, not {count}")
    if database_url is not None:
        measured = _measure(database_url, count)
    else:
        with tempfile.TemporaryDirectory(prefix="aidlink-bench-") as scratch:
            root = Path(scratch)
            root.chmod(0o755)  # the server may run as its own system user
            with PostgresProcess(data_dir=root / "pg", durable=True) as pg:
                measured = _measure(pg.create_database("bench"), count)
    figures = {
        "certificates": count,
        **measured,
        "key_algorithm": "EC-P256",
        "ca_key_algorithm": "EC-P384",
        "target_ms": TARGET_MS,
        "durable_postgres": True if database_url is None else None,  # None: not known
        "cryptography": cryptography.__version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures
