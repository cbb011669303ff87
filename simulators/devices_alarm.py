"""Simulated safety alarms: SCAIP social and mobile alarms (MQTT) and a DC-09 unit (TCP).

SCAIP units send a PI heartbeat each interval and now and then an ME alarm (button or fall);
the mobile alarm attaches its GPS position. The DC-09 unit sends a NULL link test each interval
and now and then a personal-emergency event, as SIA DCS frames stamped with its own clock
(real time plus skew, since the receiver checks the stamp against its real clock).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from simulators import dc09, scaip
from simulators.devices_base import Device, Reading, derive_seed

_DAY = timedelta(days=1).total_seconds()
# SCAIP device types (dty) and status codes (stc) used here (PROTOCOLS.md §4).
_LOCAL_UNIT, _PENDANT, _FALL_DETECTOR, _TRACKER = 2, 3, 5, 51
_AUTOMATIC, _MANUAL, _BATTERY_LOW, _ONLINE = 9, 10, 16, 75
_HOME = (Decimal("60.60650"), Decimal("15.63550"))  # Falun
_FRAME_SEQUENCE = re.compile(rb'"([A-Z0-9-]+)"(\d{4})')
_REMEMBERED_FRAMES = 32  # enough for any resend; a unit keeps no long history either


class SocialAlarm(Device):
    """A home alarm unit with a pendant: PI heartbeats, button and fall alarms (SCAIP XML)."""

    kind = "social_alarm"
    sends_status = False
    button_per_day = 0.3
    fall_per_day = 0.05
    pad = 4  # Telealarm pads codes to four digits
    button_device = _PENDANT

    def setup(self) -> None:
        """Reference numbers start from a per-unit base, as units number their messages."""
        self._ref_base = derive_seed(self.id) % 900_000 + 100_000
        self._refs = 0
        self._battery_reported = False
        self._firmware = self.state.firmware

    def ref(self) -> str:
        """The next request reference."""
        self._refs += 1
        return f"{self._ref_base}{self._refs:06d}"

    def measure(self, at: datetime) -> list[Reading]:
        """A heartbeat, then whatever happened since the last one."""
        out = [("scaip", self.heartbeat(at))]
        share = self.elapsed.total_seconds() / _DAY
        if self.rng.random() < self.button_per_day * share:
            out.append(("scaip", self.alarm(at, self.button_device, _MANUAL)))
        if self.rng.random() < self.fall_per_day * share:
            out.append(("scaip", self.alarm(at, _FALL_DETECTOR, _AUTOMATIC)))
        if self.state.battery_low and not self._battery_reported:
            self._battery_reported = True
            out.append(("scaip", self.alarm(at, _LOCAL_UNIT, _BATTERY_LOW)))
        if not self.state.battery_low:
            self._battery_reported = False
        if self.state.firmware != self._firmware:
            self._firmware = self.state.firmware  # a unit reports in after its restart
            out.append(("scaip", self.alarm(at, _LOCAL_UNIT, _ONLINE)))
        return out

    def heartbeat(self, at: datetime) -> bytes:
        """A PI heartbeat from the local unit."""
        return scaip.heartbeat(self.ref(), self.id, pad=self.pad)

    def alarm(self, at: datetime, dty: int, stc: int) -> bytes:
        """An ME message from device type ``dty`` with status ``stc``."""
        return scaip.alarm(self.ref(), self.id, dty, stc, pad=self.pad)


class MobileAlarm(SocialAlarm):
    """A GPS alarm carried outdoors: every message carries its position (``<lge>``)."""

    kind = "mobile_alarm"
    button_device = _TRACKER
    pad = 1  # Possum sends codes unpadded

    def setup(self) -> None:
        """Start at home."""
        super().setup()
        self._position = _HOME

    def position(self, at: datetime) -> scaip.Position:
        """A random walk around home, reset at night when the person is indoors."""
        if at.astimezone(self.zone).hour < 7:
            self._position = _HOME
        step = Decimal("0.00001")
        lat, lon = self._position
        lat += Decimal(round(self.rng.gauss(0, 30))) * step
        lon += Decimal(round(self.rng.gauss(0, 60))) * step
        self._position = (lat, lon)
        return scaip.Position(lat, lon)

    def heartbeat(self, at: datetime) -> bytes:
        """A PI heartbeat with the current position."""
        return scaip.request(self.ref(), self.id, _TRACKER, mty="PI", lco=35,
                             position=self.position(at), pad=self.pad)

    def alarm(self, at: datetime, dty: int, stc: int) -> bytes:
        """An ME message with the current position."""
        return scaip.alarm(self.ref(), self.id, _TRACKER if dty == _LOCAL_UNIT else dty, stc,
                           position=self.position(at), pad=self.pad)


class Dc09AlarmUnit(Device):
    """A social-alarm unit on DC-09 (SIA DCS): NULL link tests and personal-emergency alarms."""

    kind = "dc09_alarm"
    sends_status = False
    alarm_per_day = 0.3

    def setup(self) -> None:
        """Sequence numbers from 1; the clock reads real time unless told otherwise."""
        self.account = self.id
        self.wall: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._sequence = 0
        self._frames: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self._battery_reported = False
        self._firmware = self.state.firmware

    def measure(self, at: datetime) -> list[Reading]:
        """A link test, then any event since the last one."""
        out = [("dc09", self.frame("NULL", ""))]
        share = self.elapsed.total_seconds() / _DAY
        if self.rng.random() < self.alarm_per_day * share:
            out.append(("dc09", self.frame("SIA-DCS", dc09.sia_data(self.account, "QA", "001"))))
        if self.state.battery_low and not self._battery_reported:
            self._battery_reported = True
            out.append(("dc09", self.frame("SIA-DCS", dc09.sia_data(self.account, "YT", "000"))))
        if self.state.firmware != self._firmware:
            self._firmware = self.state.firmware  # a test report after the restart
            out.append(("dc09", self.frame("SIA-DCS", dc09.sia_data(self.account, "RP", "000"))))
        return out

    def frame(self, message_id: str, data: str) -> bytes:
        """A new frame with the next sequence number (0001-9999, then it wraps)."""
        self._sequence = self._sequence % 9999 + 1
        self._frames[self._sequence] = (message_id, data)
        while len(self._frames) > _REMEMBERED_FRAMES:
            self._frames.popitem(last=False)
        return self._encode(self._sequence)

    def _encode(self, sequence: int) -> bytes:
        message_id, data = self._frames[sequence]
        # An unset clock sends no timestamp (allowed in unencrypted frames, DC-09-2013 §5.5.2).
        stamp = self.wall() + self.state.clock_offset if self.state.clock_set else None
        return dc09.encode_frame(message_id, sequence, self.account, data, timestamp=stamp)

    def resend(self, frame: bytes, receiver_time: datetime | None = None) -> bytes:
        """The frame again with the same sequence; a NAK's time first corrects the clock."""
        match = _FRAME_SEQUENCE.search(frame)
        if match is None or int(match[2]) not in self._frames:
            return frame
        if receiver_time is not None:
            self.state.clock_offset = receiver_time - self.wall()
            self.state.clock_set = True
        return self._encode(int(match[2]))
