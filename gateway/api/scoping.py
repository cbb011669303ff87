"""Row-level security: each request's transaction runs as a role that does not own the tables,
with the caller's principal set for the policies to compare against.

The roles and policies are made by migration 0009_row_security.sql. Both settings are local to
the transaction, so a pooled connection goes back to the pool as the owner with no principal.
"""

from __future__ import annotations

from typing import Any

import psycopg

API_ROLE = "aidlink_api"
AUDIT_ROLE = "aidlink_audit"
ROLES = (API_ROLE, AUDIT_ROLE)


class ScopingError(RuntimeError):
    """A connection cannot be scoped as asked; the message says why."""


def enter(conn: psycopg.Connection[Any], principal: str, role: str) -> None:
    """Start the request's transaction as ``role`` with ``principal`` as the only one visible."""
    if role not in ROLES:
        raise ScopingError(f"role {role!r} is not a scoping role; use one of {', '.join(ROLES)}")
    if not principal:
        raise ScopingError("principal must not be empty: an empty one would scope to nothing"
                           " and hide the caller's mistake")
    if conn.autocommit:
        # SET LOCAL outside a transaction only warns and changes nothing: the queries would
        # run as the owner, past every policy.
        raise ScopingError("scoping needs a connection that is not in autocommit mode")
    # One round trip for both: set_config('role', ..., true) is SET LOCAL ROLE, with the same
    # membership check. The role was checked against ROLES above.
    conn.execute("SELECT set_config('role', %s, true), set_config('aidlink.principal', %s, true)",
                 (role, principal))
