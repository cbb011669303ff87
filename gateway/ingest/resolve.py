"""Who sent a message and for whom: the registry lookup of one batch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from gateway import profiles
from gateway.ingest.topics import UpTopic

_UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """The registry facts the gateway needs about a device."""

    id: str
    client_id: str
    principal: str
    state: str
    model: str
    principal_zone: str
    clock_offset_s: float | None
    online: bool | None

    @property
    def profile(self) -> profiles.Profile | None:
        """The model's firmware profile, if it has one."""
        return profiles.by_model().get(self.model)

    @property
    def zone(self) -> ZoneInfo:
        """The zone of the device's clock: its profile's, else its principal's."""
        profile = self.profile
        if profile is None:
            return ZoneInfo(self.principal_zone)
        return _UTC if profile.clock == "utc" else profile.zone_info


@dataclass(frozen=True, slots=True)
class Resolved:
    """A message whose measuring device is known and allowed to publish through its client."""

    device: DeviceRow
    client: DeviceRow


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message the registry refuses; reason is a stable label for metrics."""

    reason: str
    detail: str
    principal: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """A device at a patient during a period."""

    patient_key: str
    valid_from: datetime
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class SequenceState:
    """The highest stored-record number seen on a channel, and the last replay asked for."""

    last: int
    requested_after: int | None
    requested_at: datetime | None


class Registry:
    """The registry facts for one batch, fetched with four queries."""

    def __init__(self, conn: psycopg.Connection[Any], topics: Iterable[UpTopic]) -> None:
        wanted = list(topics)
        clients = sorted({t.client_id for t in wanted})
        devices = sorted({t.device_id for t in wanted})
        rows = conn.execute(
            "SELECT d.id, d.client_id, d.principal_code, d.state, d.model, p.zone,"
            " s.clock_offset_s, s.online FROM devices d"
            " JOIN principals p ON p.code = d.principal_code"
            " LEFT JOIN device_state s ON s.device_id = d.id"
            " WHERE d.client_id = ANY(%s) OR d.id = ANY(%s)",
            (clients, devices),
        ).fetchall()
        self._by_id = {r[0]: DeviceRow(*r) for r in rows}
        self._by_client = {d.client_id: d for d in self._by_id.values()}
        pairs = conn.execute(
            "SELECT peripheral_id, hub_id FROM pairings"
            " WHERE unpaired_at IS NULL AND peripheral_id = ANY(%s)",
            (devices,),
        ).fetchall()
        self._hub_of = {p: h for p, h in pairs}
        self._assignments: dict[str, list[Assignment]] = {}
        for device_id, key, start, end in conn.execute(
            "SELECT device_id, patient_key, valid_from, valid_to FROM assignments"
            " WHERE device_id = ANY(%s) ORDER BY valid_from",
            (devices,),
        ):
            self._assignments.setdefault(device_id, []).append(Assignment(key, start, end))
        self.sequences: dict[tuple[str, str], SequenceState] = {
            (r[0], r[1]): SequenceState(r[2], r[3], r[4])
            for r in conn.execute(
                "SELECT device_id, channel, last_sequence, requested_after, requested_at"
                " FROM record_sequences WHERE device_id = ANY(%s)",
                (devices,),
            )
        }

    def resolve(self, topic: UpTopic) -> Resolved | Rejected:
        """Decide whether the client may publish for the device, and whose the data is."""
        client = self._by_client.get(topic.client_id)
        if client is None:
            return Rejected("unknown_client", f"no device has client id {topic.client_id}")
        if client.state == "retired":
            return Rejected("retired_device", f"client {client.id} is retired", client.principal)
        device = self._by_id.get(topic.device_id)
        if device is None:
            return Rejected(
                "unknown_device", f"device {topic.device_id} is not registered", client.principal
            )
        if device.id != client.id and self._hub_of.get(device.id) != client.id:
            return Rejected(
                "unpaired_peripheral",
                f"device {device.id} is not paired with client {client.id}",
                client.principal,
            )
        if device.state == "retired":
            return Rejected("retired_device", f"device {device.id} is retired", device.principal)
        profile = device.profile
        if profile is not None and topic.channel not in profile.channels:
            return Rejected(
                "channel_not_in_profile",
                f"channel {topic.channel} is not one of model {device.model}'s channels",
                device.principal,
            )
        return Resolved(device, client)

    def patient_at(self, device_id: str, at: datetime) -> str | None:
        """The patient a device was assigned to at a moment, if any."""
        for item in self._assignments.get(device_id, ()):
            if item.valid_from <= at and (item.valid_to is None or at < item.valid_to):
                return item.patient_key
        return None
