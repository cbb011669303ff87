"""``bench bulk``: onboard thousands of devices from one CSV into a durable PostgreSQL.

Under a mutual-TLS policy with server-generated keys, each device costs an EC P-256 key, a
signature and its rows; under a password policy, a PBKDF2 hash. Both are timed apart, on a
throwaway PostgreSQL with fsync on (as in production), and written to a JSON file.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from gateway import db
from gateway.services.postgres import PostgresProcess
from provisioning import bulk, service

PASSPHRASE = b"bench-ca-passphrase-0123456789"
MTLS_PRINCIPAL = "20"
# Falun gives its devices MQTT passwords (see run_bulk_bench).
FALUN = "2080"
TARGET_S_FOR_10000 = 60


def bulk_csv(principal: str, count: int, prefix: str) -> str:
    """A CSV of ``count`` devices for a principal, serials ``prefix``-000001 onwards."""
    lines = ["principal,model,serial,firmware"]
    lines += [f"{principal},sim-bpm,{prefix}-{n:06d},1.2.0" for n in range(1, count + 1)]
    return "\n".join(lines) + "\n"


def _timed(conn: psycopg.Connection[Any], passphrase: bytes, text: str
           ) -> tuple[float, bulk.BulkResult]:
    started = time.perf_counter()
    result = bulk.onboard_csv(conn, passphrase, text, actor="bench")
    return time.perf_counter() - started, result


def measure_bulk(url: str, passphrase: bytes, count: int, *, principal: str = MTLS_PRINCIPAL,
                 password_count: int = 0, password_principal: str = FALUN) -> dict[str, Any]:
    """Onboard ``count`` devices of ``principal`` (registered, under a mutual-TLS policy) and
    ``password_count`` of ``password_principal`` (under a password policy); the figures.

    ``principal``'s certificates and serials ``M-…``/``P-…`` must be new to the database, so
    the certificate count is this run's. Refused rows end the bench: they were not timed.
    """
    with psycopg.connect(url) as conn:
        # The first certificate creates the principal's intermediate CA (and the root, in a
        # new database): not per-device work, so it happens before the clock starts.
        bulk.onboard_csv(conn, passphrase, bulk_csv(principal, 1, "warmup"), actor="bench")
        mtls_s, mtls = _timed(conn, passphrase, bulk_csv(principal, count, "M"))
        password_s, password = (0.0, bulk.BulkResult())
        if password_count:
            password_s, password = _timed(
                conn, passphrase, bulk_csv(password_principal, password_count, "P"))
        row = conn.execute("SELECT count(*) FROM certificates WHERE principal_code = %s",
                           (principal,)).fetchone()
        certificates = 0 if row is None else int(row[0]) - 1
    if mtls.refused or password.refused:
        raise RuntimeError(f"bench rows were refused: {(mtls.refused + password.refused)[:3]}")
    return {
        "devices": count + password_count,
        "seconds": round(mtls_s + password_s, 3),
        "devices_per_s": round((count + password_count) / max(mtls_s + password_s, 1e-9), 1),
        "mtls": {"devices": len(mtls.onboarded), "certificates": certificates,
                 "seconds": round(mtls_s, 3),
                 "devices_per_s": round(count / max(mtls_s, 1e-9), 1),
                 "key_algorithm": "EC-P256", "server_generated_keys": True},
        "password": {"devices": len(password.onboarded), "seconds": round(password_s, 3),
                     "devices_per_s": round(password_count / password_s, 1)
                     if password_count else None},
    }


def run_bulk_bench(out: Path, count: int = 10_000, password_count: int = 0) -> dict[str, Any]:
    """Onboard ``count`` mTLS devices (and ``password_count`` password ones); the figures."""
    with tempfile.TemporaryDirectory(prefix="aidlink-bench-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)  # the server may run as another user, which must reach its data
        pg = PostgresProcess(data_dir=root / "pg", durable=True)
        pg.start()
        try:
            url = pg.create_database("bench")
            db.migrate(url)
            with psycopg.connect(url) as conn:
                service.add_principal(conn, MTLS_PRINCIPAL, "Region Dalarna", "mtls")
                service.add_principal(conn, FALUN, "Falun", "password")
                conn.commit()
            figures = measure_bulk(url, PASSPHRASE, count, password_count=password_count)
        finally:
            pg.stop()
    figures.update({"target_s_for_10000": TARGET_S_FOR_10000, "durable_postgres": True})
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures
