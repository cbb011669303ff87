"""Request and response bodies of the provisioning API, split by direction."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Code = Field(min_length=1, max_length=64)
Reason = Field(min_length=1, max_length=500)
# Onboarding, pairing and assigning need no reason, but one given is kept in the history.
OptionalReason = Field(default=None, min_length=1, max_length=500)


class _In(BaseModel):
    # A misspelt field is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(_In):
    """A device to onboard; the principal defaults to the caller's."""

    principal: str | None = Field(default=None, min_length=1, max_length=32)
    model: str = Code
    serial: str = Code
    firmware: str | None = Field(default=None, min_length=1, max_length=32)
    alarm_account: str | None = Field(default=None, min_length=1, max_length=16)
    csr_pem: str | None = Field(default=None, min_length=1, max_length=20000)
    unit: str | None = Field(default=None, min_length=1, max_length=64)
    reason: str | None = OptionalReason


class DevicePublic(BaseModel):
    """A device as the API shows it (never its password hash)."""

    id: str
    principal: str
    client_id: str
    model: str
    serial: str
    state: str
    created_at: datetime


class Onboarded(BaseModel):
    """An onboarded device and its credentials, shown this once."""

    device_id: str
    client_id: str
    principal: str
    model: str
    serial: str
    state: str
    alarm_account: str | None = None
    firmware_version: str | None = None
    # The bundle's settings: the broker address devices use (never with credentials), the
    # topic prefix the device publishes under, and its model's firmware profile settings.
    mqtt_url: str | None = None
    topic_prefix: str | None = None
    profile: dict[str, Any] | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    certificate_pem: str | None = None
    ca_chain_pem: str | None = None
    certificate_serial: str | None = None
    certificate_not_after: datetime | None = None
    private_key_pem: str | None = None


class PairBody(_In):
    """The hub to pair the device (a peripheral) with."""

    hub: str = Code
    reason: str | None = OptionalReason


class AssignBody(_In):
    """A patient and the legal basis of the prescription."""

    patient: str = Code
    basis: str = Field(min_length=1, max_length=8, description="HSL or SoL")
    prescribing_unit: str | None = Field(default=None, min_length=1, max_length=100)
    order: str | None = Field(default=None, min_length=1, max_length=64,
                              description="the portal order it delivers")
    until: date | None = Field(default=None,
                               description="the planned last day, today or later (YYYY-MM-DD)")
    reason: str | None = OptionalReason


class ReturnBody(_In):
    """Why the device came back, and any fault reported."""

    reason: str = Reason
    fault: str | None = Field(default=None, min_length=1, max_length=500)


class ReasonBody(_In):
    """Why (every transition's history records it)."""

    reason: str = Reason


class ConfirmBody(_In):
    """The device's wipe confirmation: the request's nonce and when it wiped."""

    nonce: str = Field(min_length=1, max_length=100)
    confirmed_at: datetime


class TransferBody(_In):
    """The new owner and why."""

    to_principal: str = Field(min_length=1, max_length=32)
    reason: str = Reason


class RevokeBody(_In):
    """An RFC 5280 revocation reason, e.g. key_compromise."""

    reason: str = Field(min_length=1, max_length=40)


class WipePublic(BaseModel):
    """The wipe command for the gateway to publish with QoS 1 on the device's down topic."""

    device_id: str
    nonce: str
    topic: str
    payload: str


class PolicyVersion(BaseModel):
    """Where a policy was stored."""

    principal: str
    version: int
