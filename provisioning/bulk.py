"""Bulk onboarding from CSV: every row onboards or is refused with its line and rule.

Each row runs in its own savepoint, so a refused row undoes only itself; the work is committed
every ``batch`` rows, so a delivery of 10,000 devices never sits in one long transaction.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from provisioning import licences, onboarding
from provisioning.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ProvisioningError,
)
from provisioning.participation import ParticipationError
from provisioning.pilots import PilotError
from provisioning.pki import PassphraseError
from provisioning.policy import PolicyError
from provisioning.service import Conn

REQUIRED = ("principal", "model", "serial")
OPTIONAL = ("firmware", "alarm_account", "article_number", "individual_number", "unit")
COLUMNS = REQUIRED + OPTIONAL
# What a bundle may carry back to the caller: the same bundle fields as a single onboarding
# (broker address, topic prefix, profile settings, credentials), plus traceability.
_KEPT = ("device_id", "client_id", "principal", "model", "serial", "mqtt_url", "topic_prefix",
         "profile", "mqtt_username", "mqtt_password", "certificate_pem", "ca_chain_pem",
         "private_key_pem", "certificate_serial", "article_number", "individual_number")

Progress = Callable[[int, int], None]


@dataclass
class BulkResult:
    """What a bulk onboarding did: the onboarded rows (with credentials) and the refusals."""

    total: int = 0
    onboarded: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Rows read, onboarded and refused."""
        return {"rows": self.total, "onboarded": len(self.onboarded),
                "refused": len(self.refused)}


def _rule(exc: Exception) -> str:
    """The kind of rule a row broke, as refusals name it."""
    if isinstance(exc, PilotError):
        return "refused by pilot"
    if isinstance(exc, ParticipationError):
        return "refused: principal not participating"
    if isinstance(exc, PolicyError):
        return "refused by policy"
    if isinstance(exc, NotFoundError):
        return "unknown reference"
    if isinstance(exc, ConflictError):
        return "duplicate"
    return "bad value"


def _rows(text: str) -> tuple[list[tuple[int, dict[str, str | None]]], list[dict[str, Any]]]:
    """The data rows with their line numbers, and the rows malformed beyond onboarding."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    for column in header:
        if column not in COLUMNS:
            raise InvalidInputError(f"line 1, column {column}: unknown column; the columns are"
                                    f" {', '.join(COLUMNS)}")
    for column in REQUIRED:
        if column not in header:
            raise InvalidInputError(f"line 1, column {column}: the column is missing")
    reader.fieldnames = header
    rows: list[tuple[int, dict[str, str | None]]] = []
    malformed: list[dict[str, Any]] = []
    for raw in reader:
        line = reader.line_num
        if None in raw or None in raw.values():
            malformed.append({"line": line, "serial": raw.get("serial"),
                              "reason": f"line {line}: bad value: {len(header)} fields expected"})
            continue
        # An empty cell means "not given", as in a spreadsheet export.
        rows.append((line, {key: (value.strip() or None) for key, value in raw.items()
                            if key is not None and value is not None}))
    return rows, malformed


def _one(conn: Conn, passphrase: bytes, row: dict[str, str | None],
         actor: str, broker_url: str | None) -> dict[str, Any]:
    """Onboard one row (the caller holds its savepoint); the kept fields of the result."""
    for column in REQUIRED:
        if row.get(column) is None:
            raise InvalidInputError(f"{column} is empty")
    article, individual = row.get("article_number"), row.get("individual_number")
    if individual is not None and article is None:
        # Checked before onboarding, so no key is generated for a row that is refused anyway.
        raise InvalidInputError("an individual number needs an article number")
    made = onboarding.onboard(conn, passphrase, principal=str(row["principal"]),
                              model=str(row["model"]), serial=str(row["serial"]), actor=actor,
                              alarm_account=row.get("alarm_account"),
                              firmware_version=row.get("firmware"), unit=row.get("unit"),
                              broker_url=broker_url)
    if article is not None:
        made.update(licences.set_traceability(
            conn, device_id=made["device_id"], article_number=article,
            individual_number=individual, actor=actor, reason="bulk onboarding"))
    return {key: made[key] for key in _KEPT if key in made}


def onboard_csv(conn: Conn, passphrase: bytes, text: str, *, actor: str,
                progress: Progress | None = None, batch: int = 500,
                broker_url: str | None = None) -> BulkResult:
    """Onboard every CSV row that complies, committing every ``batch`` rows; the outcome.

    Each onboarded row is its device's bundle, ``broker_url`` its broker address."""
    if batch < 1:
        raise InvalidInputError(f"batch {batch} must be at least 1")
    rows, malformed = _rows(text)
    result = BulkResult(total=len(rows) + len(malformed), refused=malformed)
    seen: dict[tuple[str | None, str | None], int] = {}
    done = len(malformed)
    for start in range(0, len(rows), batch):
        # The outer block is the batch's transaction, the inner one each row's savepoint.
        with conn.transaction():
            for line, row in rows[start:start + batch]:
                key = (row.get("model"), row.get("serial"))
                try:
                    if key in seen and None not in key:
                        # Named here because the database would only say "already onboarded".
                        raise ConflictError(f"a device {key[0]} with serial {key[1]} is also"
                                            f" on line {seen[key]}")
                    seen.setdefault(key, line)
                    with conn.transaction():
                        result.onboarded.append(_one(conn, passphrase, row, actor, broker_url))
                except PassphraseError:
                    raise  # no row can succeed with a wrong CA passphrase: stop, not refuse all
                except (ProvisioningError, psycopg.DataError, psycopg.IntegrityError) as exc:
                    # A database refusal (a value too long, say) is a bad value like the rest.
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    result.refused.append({"line": line, "serial": row.get("serial"),
                                           "reason": f"line {line}: {_rule(exc)}: {reason}"})
                done += 1
                if progress is not None:
                    progress(done, result.total)
        # A caller's implicit transaction turns the block above into a savepoint; commit it.
        conn.commit()
    if progress is not None and not rows:
        progress(done, result.total)
    result.refused.sort(key=lambda refusal: int(refusal["line"]))
    return result
