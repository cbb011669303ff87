"""Shared parsing for the versioned JSON documents we define (docs/DEVICE_DOCUMENTS.md).

Every document is one UTF-8 JSON object with an envelope and a body:

    {"v": 1, "type": "...", "at": "2024-05-02T08:15:00+02:00", "seq": 17, ...body}

``v`` is checked before anything else, so a newer document is named as such instead of
failing on a field it renamed. Untrusted bytes pass these gates in order: size (64 KiB),
strict UTF-8, nesting depth (8), JSON syntax with exact Decimal numbers and no NaN, Infinity
or duplicate keys, a top-level object, the version, then the channel's pydantic model in
strict mode (no "1" for 1, no true for 1). Every failure is a DecodeError with one line that
names the field path, what was expected and what came.

Fields that a document does not define are tolerated (additive changes keep ``v``) and
reported: observations carry the flag ``unknown_fields`` and events ``data.unknown_fields``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema

from adapters.errors import DecodeError

MAX_JSON_BYTES = 64 * 1024
MAX_DEPTH = 8
SUPPORTED_VERSIONS = (1,)

# RFC 3339 section 5.6 date-time: the offset is mandatory (a device clock without a zone
# cannot be placed on the timeline); up to nine fraction digits, truncated to microseconds.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
# Swedish personal identity or coordination number, with or without century and separator.
# A staff credential must never be one, so such a value is refused rather than stored.
_PERSONNUMMER = re.compile(r"(\d{2})?\d{6}[-+]?\d{4}")
# Decimals beyond these are not measurements but attempts to overflow something downstream.
_MAX_DIGITS = 20
_MAX_MAGNITUDE = 15

M = TypeVar("M", bound=BaseModel)


class _Reject(Exception):
    """A reason found while parsing, turned into DecodeError with the channel at the top."""


def _no_constant(name: str) -> Any:
    raise _Reject(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Reject(f"duplicate key {key!r}")
        result[key] = value
    return result


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings; json itself would recurse without bound."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _unstorable(node: Any) -> str | None:
    """The first string (key or value) holding NUL or an unpaired surrogate, if any.

    JSON can escape both ("\\u0000", "\\ud800"); PostgreSQL jsonb refuses the first and UTF-8
    cannot carry the second, so left in they would fail later, when the event is stored.
    """
    strings: list[Any] = []
    if isinstance(node, str):
        strings = [node]
    elif isinstance(node, dict):
        strings = [*node, *node.values()]
    elif isinstance(node, list):
        strings = node
    for item in strings:
        if isinstance(item, str):
            if "\x00" in item:
                return item
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
        elif (found := _unstorable(item)) is not None:
            return found
    return None


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load(channel: str, payload: bytes, *, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """Parse untrusted bytes into a JSON object with Decimal numbers, or raise DecodeError.

    ``max_bytes`` is for a channel whose document is larger by nature (an ECG recording);
    every other gate stays the same."""
    if len(payload) > max_bytes:
        raise DecodeError(channel, f"payload is {len(payload)} bytes; the limit is {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(channel, f"payload is not UTF-8 (byte {exc.start})") from None
    if _depth(text) > MAX_DEPTH:
        raise DecodeError(channel, f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        doc = json.loads(
            text, parse_float=Decimal, parse_constant=_no_constant, object_pairs_hook=_unique_keys
        )
    except _Reject as exc:
        raise DecodeError(channel, f"invalid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(channel, f"invalid JSON: {exc.msg} at offset {exc.pos}") from None
    except ValueError as exc:  # an integer with more digits than int() accepts
        raise DecodeError(channel, f"invalid JSON: {str(exc).split(':')[0]}") from None
    if not isinstance(doc, dict):
        raise DecodeError(channel, f"expected a JSON object, got {type(doc).__name__}")
    bad = _unstorable(doc)
    if bad is not None:
        raise DecodeError(channel, f"invalid JSON: NUL or unpaired surrogate in {_got(bad)}")
    return doc


def check_version(channel: str, doc: Mapping[str, Any]) -> None:
    """Refuse a document without ``v`` or with a version this gateway does not read."""
    supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
    if "v" not in doc:
        raise DecodeError(channel, f"v: missing document version (supported: {supported})")
    version = doc["v"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise DecodeError(channel, f"v: expected an integer version, got {_got(version)}")
    if version not in SUPPORTED_VERSIONS:
        raise DecodeError(
            channel, f"unsupported document version {version} (supported: {supported})"
        )


def parse(channel: str, payload: bytes, model: type[M], *,
          max_bytes: int = MAX_JSON_BYTES) -> M:
    """Load, version-check and validate a document against ``model``."""
    doc = load(channel, payload, max_bytes=max_bytes)
    check_version(channel, doc)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "document"
        if error["type"] == "missing":
            raise DecodeError(channel, f"{where}: field required") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise DecodeError(channel, f"{where}: {message} (got {_got(error['input'])})") from None


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time with offset, e.g. 2024-05-02T08:15:00Z")
    text = value.upper()
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("not a valid date-time") from None


def _number(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("expected a JSON number")
    number = Decimal(value)
    digits = number.as_tuple().digits
    if len(digits) > _MAX_DIGITS or abs(number.adjusted()) > _MAX_MAGNITUDE:
        raise ValueError("number has too many digits or too large an exponent")
    return number


def _text(value: Any) -> Any:
    if isinstance(value, str) and re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError("control characters are not allowed")
    return value  # strict str validation follows


def _credential(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if _PERSONNUMMER.fullmatch(value.strip()):
        raise ValueError("looks like a personal identity number; send the staff credential id")
    if not re.fullmatch(r"[!-~]*", value):
        raise ValueError("expected printable ASCII without spaces")
    return value


# Field types shared by the documents. Each one validates itself and says what it expected.
Timestamp = Annotated[
    datetime, BeforeValidator(_rfc3339), WithJsonSchema({"type": "string", "format": "date-time"})
]
Number = Annotated[Decimal, BeforeValidator(_number), WithJsonSchema({"type": "number"})]
# Constraints come before the validator so pydantic keeps its specific messages for them.
ShortText = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"), BeforeValidator(_text)
]
Credential = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[!-~]+$"), BeforeValidator(_credential)
]
Percent = Annotated[int, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
RecordNumber = Annotated[int, Field(ge=0, le=2**63 - 1)]  # fits a PostgreSQL bigint


class Document(BaseModel):
    """Base of every document model: strict types, unknown fields kept for reporting."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class Part(Document):
    """Base of a nested object inside a document."""


@dataclass(frozen=True, slots=True)
class Rule:
    """When every ``when`` field holds one of its values, the ``require`` fields must be set."""

    when: Mapping[str, tuple[str, ...]]
    require: tuple[str, ...]


def enforce(channel: str, doc: BaseModel, rules: Iterable[Rule]) -> None:
    """Apply the channel's requirement table (which fields each type needs)."""
    for rule in rules:
        if all(getattr(doc, field) in values for field, values in rule.when.items()):
            for field in rule.require:
                if getattr(doc, field) is None:
                    because = " and ".join(f"{f} is {getattr(doc, f)!r}" for f in rule.when)
                    raise DecodeError(channel, f"{field}: required when {because}")


def unknown_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted paths of fields the document sent but does not define, sorted."""
    found = [prefix + name for name in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found.extend(unknown_fields(value, f"{prefix}{name}."))
    return sorted(found)


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 text in UTC ("...Z"), for event data."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def envelope_data(doc: BaseModel) -> dict[str, Any]:
    """The event data every document contributes: its ``seq`` and any unknown fields."""
    data: dict[str, Any] = {}
    seq = getattr(doc, "seq", None)
    if seq is not None:
        data["seq"] = seq
    unknown = unknown_fields(doc)
    if unknown:
        data["unknown_fields"] = unknown
    return data


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def json_schema(channel: str, model: type[BaseModel], rules: Iterable[Rule]) -> dict[str, Any]:
    """JSON Schema (2020-12) of a document: the model's schema plus its requirement table."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:aidlink:document:{channel}:{SUPPORTED_VERSIONS[-1]}",
        **_strip_titles(model.model_json_schema()),
    }
    conditions = []
    for rule in rules:
        conditions.append({
            "if": {
                "properties": {f: {"enum": list(v)} for f, v in rule.when.items()},
                "required": list(rule.when),
            },
            "then": {
                "properties": {f: {"not": {"type": "null"}} for f in rule.require},
                "required": list(rule.require),
            },
        })
    if conditions:
        schema["allOf"] = conditions
    return schema
