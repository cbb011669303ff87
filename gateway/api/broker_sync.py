"""Keeping the broker in step with the registry after the API changed a device's credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request

from provisioning import broker_config


def broker_dir(request: Request) -> Path | None:
    """The broker-config directory the application was built with, if any."""
    value = getattr(request.app.state, "aidlink_broker_dir", None)
    return value if isinstance(value, Path) else None


BrokerDir = Annotated[Path | None, Depends(broker_dir)]


def sync(conn: psycopg.Connection[Any], passphrase: bytes, out: Path | None,
         result: dict[str, Any]) -> dict[str, Any]:
    """After the change committed: refresh the broker's CRLs, passwords and ACL and reload
    it, so that a revoked device loses its rights at once; the result says so."""
    if out is None:
        return result
    with conn.transaction():
        broker = broker_config.sync(conn, passphrase, out)
    return {**result, "broker": broker}
