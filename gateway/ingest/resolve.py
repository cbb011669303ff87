"""Who sent a message and for whom: the registry lookup of one batch."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from adapters.wipe import CHANNEL as WIPE_CHANNEL
from gateway import profiles
from gateway.ingest.topics import UpTopic

_UTC = ZoneInfo("UTC")
# A principal that has taken part since before anyone measured anything.
ALWAYS = datetime.min.replace(tzinfo=_UTC)


# Not frozen: one is made for every device of every batch, and a frozen dataclass sets each
# field through object.__setattr__ (see adapters.model.Observation). Treat it as immutable.
@dataclass(slots=True)
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
    # From when the device's principal takes part; None while it has not joined.
    participates_from: datetime | None = ALWAYS

    @property
    def profile(self) -> profiles.Profile | None:
        """The model's firmware profile, if it has one."""
        return _model_facts(self.model, self.principal_zone)[0]

    @property
    def zone(self) -> ZoneInfo:
        """The zone of the device's clock: its profile's, else its principal's."""
        return _model_facts(self.model, self.principal_zone)[1]


# Asked for every message; profiles are read once per process (profiles.by_model).
@functools.lru_cache(maxsize=4096)
def _model_facts(model: str, principal_zone: str) -> tuple[profiles.Profile | None, ZoneInfo]:
    profile = profiles.by_model().get(model)
    if profile is None:
        return None, ZoneInfo(principal_zone)
    return profile, _UTC if profile.clock == "utc" else profile.zone_info


# Not frozen: one is made for every message, and a frozen dataclass sets each field through
# object.__setattr__ (see adapters.model.Observation). Treat it as immutable.
@dataclass(slots=True)
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


# Reads the stored-record numbers of the given devices.
SequenceLoader = Callable[[list[str]], dict[tuple[str, str], "SequenceState"]]


class Registry:
    """The registry facts for one batch: who each client and device is, pairings, assignments
    and the stored-record numbers seen so far (gathered by registry_cache.RegistryCache)."""

    def __init__(self, devices: Mapping[str, DeviceRow], hub_of: Mapping[str, str],
                 assignments: Mapping[str, Sequence[Assignment]],
                 sequences: SequenceLoader) -> None:
        self._by_id = devices
        self._by_client = {d.client_id: d for d in devices.values()}
        self._hub_of = hub_of
        self._assignments = assignments
        self._load_sequences = sequences
        # "Now" for the participation check: a batch is taken within milliseconds.
        self._now = datetime.now(_UTC)

    def sequences(self, device_ids: Collection[str]) -> dict[tuple[str, str], SequenceState]:
        """The stored-record numbers of these devices' channels, read when first needed: most
        batches carry no numbered records and ask for none."""
        return self._load_sequences(sorted(device_ids)) if device_ids else {}

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
        # A device being reconditioned keeps its credentials only to confirm its wipe; what
        # else it sends (stored records, test measurements) has no patient and is set aside,
        # never attributed by its timestamps to the patient it came back from.
        if device.state == "reconditioning" and topic.channel != WIPE_CHANNEL:
            return Rejected(
                "reconditioning_device",
                f"device {device.id} is being reconditioned; only its wipe confirmation on"
                f" channel {WIPE_CHANNEL} is accepted, not {topic.channel}",
                device.principal,
            )
        # Checked at receipt, so a principal joining from a date starts its flow on that date
        # even though the cached row does not change then.
        if device.participates_from is None or self._now < device.participates_from:
            return Rejected(
                "principal_not_participating",
                f"principal {device.principal} of device {device.id} does not participate"
                + ("" if device.participates_from is None
                   else f" before {device.participates_from.isoformat()}"),
                device.principal,
            )
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
