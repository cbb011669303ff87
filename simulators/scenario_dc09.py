"""The TCP side of a DC-09 alarm unit in a scenario: send a frame, await ACK, NAK or DUH.

Like a real unit (and ``simulators.dc09.AlarmUnit``) it resends on NAK or silence with the same
sequence number, taking the receiver's clock from a NAK; a resend is always the clean frame, so
a fault spoils only the first attempt. It is blocking, so the scenario's one thread runs it.
"""

from __future__ import annotations

import socket
from contextlib import suppress
from datetime import datetime

from simulators.dc09 import parse_reply
from simulators.devices_alarm import Dc09AlarmUnit
from simulators.faults import Message
from simulators.scenario_report import Recorder

_MAX_REPLY = 1024  # a reply is well under 100 bytes; more without <CR> is not a receiver


class Dc09Link:
    """One unit's connection to its receiver, opened on first use and after a failure."""

    def __init__(self, unit: Dc09AlarmUnit, host: str, port: int, *, timeout: float,
                 recorder: Recorder, attempts: int = 3) -> None:
        self.unit, self._host, self._port = unit, host, port
        self._timeout, self._attempts, self._recorder = timeout, attempts, recorder
        self._sock: socket.socket | None = None

    def deliver(self, message: Message) -> Message | None:
        """Send one frame until answered; the frame as finally sent when ACKed, else None."""
        frame = message.payload
        account = self.unit.account
        for attempt in range(self._attempts):
            if attempt:
                self._recorder.dc09(account, "resent")
            outcome, receiver_time = self._exchange(frame)
            self._recorder.dc09(account, outcome)
            if outcome == "ACK":
                return Message(message.device, message.channel, frame, message.at,
                               None if attempt else message.clean)
            if outcome == "DUH":
                return None
            clean = message.clean or message.payload
            frame = self.unit.resend(clean, receiver_time if outcome == "NAK" else None)
        self._recorder.dc09(account, "failed")
        return None

    def _exchange(self, frame: bytes) -> tuple[str, datetime | None]:
        """One attempt: the reply's kind (or timeout, closed) and a NAK's receiver time."""
        try:
            sock = self._connect()
            sock.sendall(frame)
            data = b""
            while not data.endswith(b"\r"):
                chunk = sock.recv(256)
                if not chunk or len(data) > _MAX_REPLY:
                    self.close()
                    return "closed", None
                data += chunk
        except TimeoutError:
            # The receiver may hold half a frame of ours; a fresh connection starts clean.
            self.close()
            return "timeout", None
        except OSError:
            self.close()
            return "closed", None
        try:
            reply = parse_reply(data[data.rfind(b"\n"):])
        except ValueError:
            self.close()
            return "closed", None
        return reply.kind, reply.timestamp

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self._host, self._port), self._timeout)
            self._sock.settimeout(self._timeout)
        return self._sock

    def close(self) -> None:
        """Close the connection, if open."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with suppress(OSError):
                sock.close()
