"""Structured logs: JSON lines with device and principal, and no patient identifier ever."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from gateway.ingest import supervision
from gateway.ingest.store import BatchStore, Incoming
from gateway.logs import REDACTED, configure_logging, handler, redact
from gateway.settings import load_settings
from simulators.bpm import BpReading, encode
from tests.support import seed


class Captured:
    """JSON lines written by a handler on one logger, parsed."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines()]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """The ``gateway`` and ``test`` loggers at INFO, written as JSON to a buffer."""
    stream = io.StringIO()
    out = handler("json", stream)
    loggers = [logging.getLogger("gateway"), logging.getLogger("test")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(out)
        logger.setLevel(logging.INFO)
    try:
        yield Captured(stream)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(out)
            logger.setLevel(level)


def test_a_json_line_has_time_level_logger_message_and_the_device_fields(
        captured: Captured) -> None:
    logging.getLogger("test.fleet").warning(
        "device %s late", "dev-1", extra={"device": "dev-1", "principal": "2080",
                                          "client_id": "hub-1"})
    logging.getLogger("test.fleet").info("no device here")
    first, second = captured.lines()
    assert datetime.fromisoformat(first.pop("time")).tzinfo is not None
    assert first == {"level": "WARNING", "logger": "test.fleet", "message": "device dev-1 late",
                     "device": "dev-1", "principal": "2080", "client_id": "hub-1"}
    assert set(second) == {"time", "level", "logger", "message"}


def test_a_rejected_payload_is_logged_with_its_device_principal_and_client(
        database_url: str, captured: Captured) -> None:
    fleet = seed(database_url)
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35",
                                         payload=b"\x00", received_at=datetime.now(UTC))])
    [line] = [x for x in captured.lines() if x["logger"] == "gateway.ingest.plan"]
    assert line["message"].startswith("rejected ble/2a35 from")
    assert (line["device"], line["principal"], line["client_id"]) == (fleet.cuff, "20",
                                                                      fleet.hub)


def test_a_device_going_offline_is_logged_with_its_principal(database_url: str,
                                                             captured: Captured) -> None:
    fleet = seed(database_url)
    heard = datetime.now(UTC) - timedelta(days=2)
    payload = encode(BpReading(systolic=Decimal(120), diastolic=Decimal(80), mean=Decimal(93),
                               measured_at=heard.replace(microsecond=0)))
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35",
                                         payload=payload, received_at=heard)])
        supervision.sweep(conn, heard + timedelta(hours=25))
    offline = [x for x in captured.lines() if x["logger"] == "gateway.ingest.supervision"]
    assert sorted((x["device"], x["principal"]) for x in offline) == sorted(
        [(fleet.hub, "20"), (fleet.cuff, "20")])
    assert all("went offline" in x["message"] for x in offline)


@pytest.mark.parametrize("number", [
    "19121212-1212",   # the Tax Agency's test personnummer, 12 digits with hyphen
    "191212121212",    # 12 digits
    "121212-1212",     # 10 digits
    "121212+1212",     # 10 digits, over 100 years old
    "1212121212",      # 10 digits without separator
    "19121272-1212",   # a samordningsnummer: day + 60
])
def test_a_personnummer_is_redacted_from_message_and_arguments(captured: Captured,
                                                               number: str) -> None:
    log = logging.getLogger("test.patients")
    log.info(f"assigned to patient{number} today")
    log.info("assigned to %s today", number)
    log.info("reading", extra={"patient": number, "device": "dev-1"})
    messages = [line["message"] for line in captured.lines()]
    assert messages == [f"assigned to patient{REDACTED} today",
                        f"assigned to {REDACTED} today", "reading"]
    assert number not in json.dumps(captured.lines())


def test_a_personnummer_in_an_exception_and_a_patient_field_is_redacted_in_text_too() -> None:
    stream = io.StringIO()
    out = handler("text", stream)
    out.setFormatter(logging.Formatter("%(message)s %(patient)s"))
    log = logging.getLogger("test.text")
    log.addHandler(out)
    try:
        try:
            raise ValueError("no device for 19121212-1212")
        except ValueError:
            log.error("lookup failed", exc_info=True, extra={"patient": "19121212-1212"})
    finally:
        log.removeHandler(out)
    text = stream.getvalue()
    assert text.startswith(f"lookup failed {REDACTED}\n")
    assert f"ValueError: no device for {REDACTED}" in text
    assert "1212-1212" not in text


@pytest.mark.parametrize("text", [
    "received at 2024-05-01T10:00:00Z",   # a date is not a personnummer
    "epoch 1712345678901",                # 13 digits: longer than any personnummer
    "serial 1234567890",                  # month 34 does not exist
    "sequence 19121212-12123",            # a longer run of digits
])
def test_numbers_that_are_not_personnummer_are_kept(text: str) -> None:
    assert redact(text) == text


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for added in root.handlers[:]:
            root.removeHandler(added)
        for kept in handlers:
            root.addHandler(kept)
        root.setLevel(level)


@pytest.mark.usefixtures("root_restored")
def test_configure_logging_switches_the_root_format_without_duplicating() -> None:
    text, json_out = io.StringIO(), io.StringIO()
    configure_logging("text", stream=text)
    configure_logging("json", stream=json_out)
    logging.getLogger("test.root").info("patient 19121212-1212 seen",
                                        extra={"principal": "20"})
    assert text.getvalue() == ""
    [line] = [json.loads(x) for x in json_out.getvalue().splitlines()]
    assert (line["message"], line["principal"]) == (f"patient {REDACTED} seen", "20")
    assert len(logging.getLogger().handlers) == 1


def test_the_log_format_setting_defaults_to_text_and_accepts_only_text_or_json(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIDLINK_LOG_FORMAT", raising=False)
    assert load_settings().log_format == "text"
    monkeypatch.setenv("AIDLINK_LOG_FORMAT", "json")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("AIDLINK_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        load_settings()
    with pytest.raises(ValueError, match="'xml' is neither 'text' nor 'json'"):
        handler("xml")  # type: ignore[arg-type]
