"""Per-principal security policies: validated, versioned in the database, checked on the fleet."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from provisioning.errors import InvalidInputError, NotFoundError, ProvisioningError

Conn = psycopg.Connection[Any]

KEY_ALGORITHMS = ("EC-P256", "EC-P384", "RSA-2048", "RSA-3072", "RSA-4096")
_DOTTED = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")
_RSA = re.compile(r"^RSA-([0-9]+)$")


class PolicyError(ProvisioningError):
    """A request breaks a principal's security policy; the message names the rule."""


def version_key(version: str) -> tuple[int, ...]:
    """A dotted version as numbers, so 1.10.0 sorts above 1.9.2 and 1.1 equals 1.1.0."""
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


class Policy(BaseModel):
    """A principal's security rules; ``principal`` and ``version`` tell where it was stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_auth: Literal["mtls", "password"] = "mtls"
    key_algorithm: str = "EC-P256"
    certificate_lifetime_days: int = Field(default=365, ge=1, le=1825)
    renew_before_days: int = Field(default=30, ge=1)
    min_tls_version: Literal["1.2", "1.3"] = "1.2"
    allowed_models: tuple[str, ...] = ()
    min_firmware: dict[str, str] = Field(default_factory=dict)
    observation_retention_days: int = Field(default=3650, ge=1)
    raw_payload_retention_days: int = Field(default=90, ge=1)
    api_clients: tuple[str, ...] = ()

    _principal: str | None = PrivateAttr(default=None)
    _version: int = PrivateAttr(default=0)

    @field_validator("key_algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        rsa = _RSA.fullmatch(value)
        if rsa is not None and int(rsa.group(1)) < 2048:
            raise ValueError(f"{value} is too weak: RSA keys must have at least 2048 bits")
        if value not in KEY_ALGORITHMS:
            raise ValueError(f"{value!r} is not one of {', '.join(KEY_ALGORITHMS)}")
        return value

    @field_validator("allowed_models", "api_clients")
    @classmethod
    def _no_blank_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name.strip() for name in value):
            raise ValueError("names must not be empty")
        return value

    @field_validator("min_firmware")
    @classmethod
    def _dotted_versions(cls, value: dict[str, str]) -> dict[str, str]:
        for model, version in value.items():
            if not _DOTTED.fullmatch(version):
                raise ValueError(f"{version!r} for {model} is not a dotted version such as 1.2.0")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.renew_before_days >= self.certificate_lifetime_days:
            raise ValueError(
                f"renew_before_days ({self.renew_before_days}) must be less than"
                f" certificate_lifetime_days ({self.certificate_lifetime_days})"
            )
        stray = sorted(set(self.min_firmware) - set(self.allowed_models))
        if self.allowed_models and stray:
            raise ValueError(f"min_firmware names {', '.join(stray)}, which allowed_models"
                             " does not allow")
        return self

    @property
    def principal(self) -> str | None:
        """The principal this policy was read for, if it was read from the database."""
        return self._principal

    @property
    def version(self) -> int:
        """The stored version; 0 for a principal's default policy or an unsaved one."""
        return self._version

    def label(self) -> str:
        """How messages name this policy: ``principal 20's policy v3``."""
        which = f"policy v{self._version}" if self._version else "default policy"
        return f"principal {self._principal}'s {which}" if self._principal else f"the {which}"

    def short_label(self) -> str:
        """``policy v3`` (or ``default policy``) for messages that already name the principal."""
        return f"policy v{self._version}" if self._version else "default policy"

    def document(self) -> dict[str, Any]:
        """The rules as stored (JSON types)."""
        return self.model_dump(mode="json")


def parse_policy(document: Mapping[str, Any]) -> Policy:
    """Validate a policy document; InvalidInputError names every field that is wrong."""
    try:
        return Policy.model_validate(dict(document))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"policy field {where}: {message}" if where else f"policy: {message}")
        raise InvalidInputError("; ".join(problems)) from None


def _bind(policy: Policy, principal: str, version: int) -> Policy:
    bound = policy.model_copy()
    bound._principal = principal
    bound._version = version
    return bound


def set_policy(conn: Conn, principal: str, policy: Policy | Mapping[str, Any], actor: str) -> int:
    """Store a new version of a principal's policy (unless it equals the current); its version.

    The principal's ``device_auth`` column follows the policy, so onboarding (which reads it)
    hands out passwords only where the current policy allows them.
    """
    rules = policy if isinstance(policy, Policy) else parse_policy(policy)
    document = rules.document()
    with conn.transaction():
        # Locking the principal serialises two writers, so versions never collide.
        if conn.execute("SELECT 1 FROM principals WHERE code = %s FOR UPDATE",
                        (principal,)).fetchone() is None:
            raise NotFoundError(f"principal {principal} does not exist")
        row = conn.execute(
            "SELECT version, document FROM policies WHERE principal_code = %s"
            " ORDER BY version DESC LIMIT 1", (principal,),
        ).fetchone()
        if row is not None and row[1] == document:
            return int(row[0])
        version = 1 if row is None else int(row[0]) + 1
        conn.execute(
            "INSERT INTO policies (principal_code, version, created_by, document)"
            " VALUES (%s, %s, %s, %s)", (principal, version, actor, Jsonb(document)),
        )
        conn.execute("UPDATE principals SET device_auth = %s WHERE code = %s",
                     (rules.device_auth, principal))
    return version


def current_policy(conn: Conn, principal: str) -> Policy:
    """The principal's highest policy version, or the default policy if none is stored."""
    row = conn.execute(
        "SELECT p.device_auth, v.version, v.document FROM principals p"
        " LEFT JOIN LATERAL (SELECT version, document FROM policies"
        "   WHERE principal_code = p.code ORDER BY version DESC LIMIT 1) v ON true"
        " WHERE p.code = %s", (principal,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"principal {principal} does not exist")
    device_auth, version, document = row
    if version is None:
        # Until a policy is stored, the principal's registered device auth is the only rule.
        return _bind(Policy(device_auth=device_auth), principal, 0)
    return _bind(Policy.model_validate(document), principal, int(version))


def policy_history(conn: Conn, principal: str) -> list[dict[str, Any]]:
    """Every stored version of a principal's policy, oldest first."""
    current_policy(conn, principal)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT principal_code AS principal, version, created_at, created_by, document"
                    " FROM policies WHERE principal_code = %s ORDER BY version", (principal,))
        return cur.fetchall()


def check_device(policy: Policy, model: str, firmware: str | None) -> list[str]:
    """Why a device of this model and firmware breaks the policy; empty if it complies."""
    reasons = []
    if policy.allowed_models and model not in policy.allowed_models:
        reasons.append(f"model {model} is not allowed by {policy.label()}"
                       f" (allowed_models: {', '.join(policy.allowed_models)})")
    minimum = policy.min_firmware.get(model)
    if minimum is not None:
        if firmware is None:
            reasons.append(f"firmware of {model} is unknown; the minimum is {minimum}"
                           f" ({policy.short_label()})")
        elif version_key(firmware) < version_key(minimum):
            reasons.append(f"firmware {firmware} of {model} is below the minimum {minimum}"
                           f" ({policy.short_label()})")
    return reasons


def _certificate_reasons(policy: Policy, row: dict[str, Any], now: datetime) -> list[str]:
    if row["serial"] is None:
        return []
    serial, reasons = row["serial"], []
    if row["key_algorithm"] != policy.key_algorithm:
        reasons.append(f"certificate {serial} has an {row['key_algorithm']} key; {policy.label()}"
                       f" requires {policy.key_algorithm} (key_algorithm)")
    days = (row["not_after"] - row["not_before"]).days
    if days > policy.certificate_lifetime_days:
        reasons.append(f"certificate {serial} is valid for {days} days, more than the"
                       f" {policy.certificate_lifetime_days} of {policy.label()}"
                       " (certificate_lifetime_days)")
    if row["not_after"] <= now:
        reasons.append(f"certificate {serial} expired at {row['not_after'].isoformat()}")
    return reasons


def fleet_check(conn: Conn, principal: str | None = None,
                now: datetime | None = None) -> list[dict[str, Any]]:
    """Every device in use that no longer complies with its principal's current policy, and why."""
    now = now or datetime.now(UTC)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT d.id, d.principal_code, d.model, d.firmware_version,"
            " d.mqtt_password_hash IS NOT NULL AS has_password,"
            " c.serial, c.key_algorithm, c.not_before, c.not_after"
            " FROM devices d LEFT JOIN LATERAL ("
            "   SELECT serial, key_algorithm, not_before, not_after FROM certificates"
            "   WHERE device_id = d.id AND revoked_at IS NULL AND replaced_by IS NULL"
            "   ORDER BY issued_at DESC LIMIT 1) c ON true"
            " WHERE d.state <> 'retired' AND (%s::text IS NULL OR d.principal_code = %s)"
            " ORDER BY d.principal_code, d.id", (principal, principal),
        )
        rows = cur.fetchall()
    policies: dict[str, Policy] = {}
    findings = []
    for row in rows:
        code = row["principal_code"]
        if code not in policies:
            policies[code] = current_policy(conn, code)
        policy = policies[code]
        reasons = check_device(policy, row["model"], row["firmware_version"])
        if policy.device_auth == "mtls" and row["has_password"]:
            reasons.append(f"device has an MQTT password but {policy.label()} requires mtls"
                           " (device_auth)")
        reasons += _certificate_reasons(policy, row, now)
        if reasons:
            findings.append({
                "device_id": row["id"], "principal": code, "model": row["model"],
                "firmware_version": row["firmware_version"], "policy_version": policy.version,
                "reasons": reasons,
            })
    return findings
