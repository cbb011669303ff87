"""Log output: plain text for people, or one JSON object per line for log shippers.

A record about a device carries it in ``extra=`` (``device``, ``principal``, ``client_id``),
so a log search finds every line about one device without parsing messages. Patient
identifiers never reach a log line: ``RedactPatients`` removes anything shaped like a
personnummer (or samordningsnummer) and any ``patient`` field, whatever the formatter.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# The fields a record may carry via ``extra=`` that the JSON formatter writes out.
CONTEXT_FIELDS = ("device", "principal", "client_id")
REDACTED = "[redacted]"

# YYYYMMDD or YYMMDD, then an optional - or + (+ for the over-100s), then four digits. The day
# may be 61-91: a samordningsnummer adds 60 to it. Digits on either side mean a longer number
# (a timestamp, a serial), not a personnummer; letters do not, "patient19121212-1212" counts.
PERSONNUMMER = re.compile(
    r"(?<!\d)(?:(?:18|19|20)\d{2}|\d{2})"
    r"(?:0[1-9]|1[0-2])"
    r"(?:0[1-9]|[12]\d|3[01]|6[1-9]|[78]\d|9[01])"
    r"[-+]?\d{4}(?!\d)"
)


def redact(text: str) -> str:
    """``text`` with every personnummer-shaped number replaced."""
    return PERSONNUMMER.sub(REDACTED, text)


class RedactPatients(logging.Filter):
    """Rewrites a record so no patient identifier leaves the process in it.

    Attach it to handlers, not loggers: a logger's filters skip records that reach its
    handlers from child loggers, a handler's see every record it writes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the message, its arguments, exception text and a ``patient`` field."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            # Formatted once here: the arguments could carry an identifier on their own.
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the redacted text is what they write.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        if hasattr(record, "patient"):
            record.patient = REDACTED
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, RFC 3339), level, logger, message, the
    record's device, principal and client_id when it has them, and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def handler(fmt: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr unless told) writing ``fmt``, with patient redaction."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r} is neither 'text' nor 'json'")
    out = logging.StreamHandler(stream if stream is not None else sys.stderr)
    out.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    out.addFilter(RedactPatients())
    return out


def configure_logging(fmt: LogFormat, *, level: int = logging.INFO,
                      stream: TextIO | None = None) -> logging.Handler:
    """Make the root logger write ``fmt`` lines at ``level`` and above; returns the handler.

    Replaces the root logger's handlers, so calling it again switches format rather than
    writing every line twice.
    """
    out = handler(fmt, stream)
    logging.basicConfig(level=level, handlers=[out], force=True)
    return out
