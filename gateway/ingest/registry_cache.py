"""The registry facts a gateway needs for every message, kept between batches.

Who a client is, which principal and model a device has, its principal's zone and from when
it participates (a join updates principals, which bumps the version), pairings and assignments
change rarely (onboarding, an assignment, a return) but are needed for every message.
The cache holds them per device and drops everything when the registry's version moved:
migration 0013 makes every statement on principals, devices, pairings and assignments bump
``registry_version`` in its own transaction.

Ordering: each batch reads the version in its own transaction before it uses the cache, so a
change committed before the batch starts is always seen. A change that commits while a batch
is being written moves the version again and the next batch reads afresh, as if the message had
arrived a moment earlier.

What changes with every batch is still read per batch: the devices' state (online, clock
offset), which the supervision thread and other gateways write, and, only for the devices
whose messages carry numbered records, the stored record numbers per channel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from gateway.ingest.resolve import Assignment, DeviceRow, Registry, SequenceState
from gateway.ingest.topics import UpTopic


@dataclass(frozen=True, slots=True)
class _Device:
    """The rarely changing part of a DeviceRow."""

    id: str
    client_id: str
    principal: str
    state: str
    model: str
    principal_zone: str
    participates_from: datetime | None


class RegistryCache:
    """Registry facts of the devices seen on one connection, dropped on any registry change."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._version: int | None = None
        self._devices: dict[str, _Device] = {}
        self._by_client: dict[str, str] = {}
        self._hub_of: dict[str, str] = {}
        self._assignments: dict[str, list[Assignment]] = {}
        self.loads = 0

    def registry(self, topics: Iterable[UpTopic]) -> Registry:
        """The registry for one batch's topics: cached facts, loading what is missing, with the
        devices' current state and record numbers read now."""
        self._check_version()
        wanted = list(topics)
        clients = {t.client_id for t in wanted}
        devices = {t.device_id for t in wanted}
        missing_clients = clients - self._by_client.keys()
        missing_devices = devices - self._devices.keys()
        if missing_clients or missing_devices:
            self._load(sorted(missing_clients), sorted(missing_devices))
        ids = {self._by_client[c] for c in clients if c in self._by_client}
        ids.update(d for d in devices if d in self._devices)
        ordered = sorted(ids)
        # A join on the unnested ids, not "= ANY(%s)": once psycopg prepares the statement,
        # PostgreSQL may settle on a generic plan, which tests every row against the whole
        # array; the join hashes the ids whatever the plan. Arrays go in binary (%b): psycopg
        # writes a list of hundreds of ids in text four times as slowly, timestamps twenty.
        state = {
            r[0]: (r[1], r[2]) for r in self._conn.execute(
                "SELECT s.device_id, s.clock_offset_s, s.online FROM device_state s"
                " JOIN unnest(%b::text[]) AS w(id) ON w.id = s.device_id", (ordered,))
        }
        rows = {}
        for device_id in ordered:
            d = self._devices[device_id]
            offset, online = state.get(device_id, (None, None))
            rows[device_id] = DeviceRow(d.id, d.client_id, d.principal, d.state, d.model,
                                        d.principal_zone, offset, online, d.participates_from)
        return Registry(rows, self._hub_of, self._assignments, self._sequences)

    def _sequences(self, device_ids: list[str]) -> dict[tuple[str, str], SequenceState]:
        return {
            (r[0], r[1]): SequenceState(r[2], r[3], r[4])
            for r in self._conn.execute(
                "SELECT r.device_id, r.channel, r.last_sequence, r.requested_after,"
                " r.requested_at FROM record_sequences r"
                " JOIN unnest(%b::text[]) AS w(id) ON w.id = r.device_id", (device_ids,))
        }

    def _check_version(self) -> None:
        """Drop everything held if the registry changed since it was read."""
        row = self._conn.execute("SELECT version FROM registry_version").fetchone()
        version = None if row is None else int(row[0])
        if version != self._version:
            self._version = version
            self._devices.clear()
            self._by_client.clear()
            self._hub_of.clear()
            self._assignments.clear()

    def _load(self, clients: list[str], devices: list[str]) -> None:
        """Fetch devices by client id or id, with their pairings and assignments (all of them:
        a late reading belongs to the assignment of its own time)."""
        self.loads += 1
        found = [
            _Device(*r) for r in self._conn.execute(
                "SELECT d.id, d.client_id, d.principal_code, d.state, d.model, p.zone,"
                " p.participates_from FROM devices d JOIN principals p ON p.code = d.principal_code"
                " WHERE d.client_id = ANY(%s) OR d.id = ANY(%s)",
                (clients, devices),
            )
        ]
        ids = [d.id for d in found]
        for d in found:
            self._devices[d.id] = d
            self._by_client[d.client_id] = d.id
            self._assignments[d.id] = []
        for peripheral, hub in self._conn.execute(
                "SELECT peripheral_id, hub_id FROM pairings"
                " WHERE unpaired_at IS NULL AND peripheral_id = ANY(%s)", (ids,)):
            self._hub_of[peripheral] = hub
        for device_id, key, start, end in self._conn.execute(
                "SELECT device_id, patient_key, valid_from, valid_to FROM assignments"
                " WHERE device_id = ANY(%s) ORDER BY valid_from", (ids,)):
            self._assignments[device_id].append(Assignment(key, start, end))
