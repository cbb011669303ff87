"""Row-level security: each request's transaction runs as a role that does not own the tables,
with the caller's principal set for the policies to compare against."""

from __future__ import annotations

from typing import Any

import psycopg

API_ROLE = "aidlink_api"
AUDIT_ROLE = "aidlink_audit"


def enter(conn: psycopg.Connection[Any], principal: str, role: str) -> None:
    """Start the request's transaction as ``role`` with ``principal`` as the only one visible."""
    conn.execute("SELECT set_config('aidlink.principal', %s, true)", (principal,))
