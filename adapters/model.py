"""The canonical model: one observation or event per JSON object (DESIGN.md, canonical output)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import orjson

DEFAULT_ZONE = ZoneInfo("Europe/Stockholm")


class Unit(StrEnum):
    """UCUM unit codes used by the canonical model."""

    MMHG = "mm[Hg]"
    KPA = "kPa"
    PER_MIN = "/min"
    PERCENT = "%"
    KG = "kg"
    LB = "[lb_av]"
    M = "m"
    IN = "[in_i]"
    KG_PER_M2 = "kg/m2"
    CEL = "Cel"
    DEGF = "[degF]"
    MG_PER_DL = "mg/dL"
    MMOL_PER_L = "mmol/L"
    L = "L"
    L_PER_MIN = "L/min"
    UG_PER_G = "ug/g"
    MV = "mV"
    PH = "[pH]"
    # UCUM's unity for a coded result: there is no quantity, so no unit (UCUM §2.2.2 "1").
    NONE = "1"


class AbsentReason(StrEnum):
    """Why a value is absent (FHIR data-absent-reason codes, PHD IG mapping of special values)."""

    NOT_A_NUMBER = "not-a-number"
    POSITIVE_INFINITY = "positive-infinity"
    NEGATIVE_INFINITY = "negative-infinity"
    ERROR = "error"


def utc(moment: datetime) -> datetime:
    """Return an aware datetime in UTC; a naive one is refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: the zone of a device time must be known")
    return moment.astimezone(UTC)


# Not frozen: one is made for every message, and a frozen dataclass sets each field through
# object.__setattr__ (see Observation below). Treat it as immutable.
@dataclass(slots=True)
class DecodeContext:
    """What a decoder needs to know beyond the bytes."""

    zone: ZoneInfo = DEFAULT_ZONE
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Coded:
    """A coded result (FHIR ``valueCodeableConcept``): one code of a named system.

    Used for ordinal and nominal results, e.g. a urine test pad's "2+" (SNOMED CT 260348001)
    or an ECG rhythm "atrial fibrillation" (SNOMED CT 164889003); ``rank`` orders the steps of
    an ordinal scale (0 = negative), so trends can be read without parsing displays.
    """

    system: str
    code: str
    display: str
    rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON object of the code."""
        data: dict[str, Any] = {"system": self.system, "code": self.code,
                                "display": self.display}
        if self.rank is not None:
            data["rank"] = self.rank
        return data


@dataclass(frozen=True, slots=True)
class Sampled:
    """A waveform as FHIR ``SampledData``: sample i is ``origin + factor * data[i]`` in the
    observation's unit, one every ``period_ms`` milliseconds (one row, not a row per sample).

    ``data`` holds the device's raw integers (ADC counts), as the FHIR R4 example
    observation-example-sample-data does (origin 2048, factor 1.612): exact and compact.
    """

    origin: Decimal
    period_ms: Decimal
    factor: Decimal
    data: tuple[int, ...]
    lower_limit: Decimal | None = None
    upper_limit: Decimal | None = None
    dimensions: int = 1

    def __post_init__(self) -> None:
        if not self.data or self.period_ms <= 0 or self.factor == 0:
            raise ValueError("sampled data needs samples, a positive period and a factor")

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON object, keys named as in FHIR SampledData (period in ms)."""
        data: dict[str, Any] = {"origin": self.origin, "period": self.period_ms,
                                "factor": self.factor}
        if self.lower_limit is not None:
            data["lower_limit"] = self.lower_limit
        if self.upper_limit is not None:
            data["upper_limit"] = self.upper_limit
        data["dimensions"] = self.dimensions
        data["data"] = list(self.data)
        return data


# Not frozen, unlike the other records here: a frozen dataclass sets each of its twelve fields
# through object.__setattr__, and one is made for every stored value. Under callgrind that was
# 15 % of the gateway's work per message when storing blood pressure. Nothing changes an
# Observation once made; a corrected one is a new one (dataclasses.replace).
@dataclass(slots=True)
class Observation:
    """One measured value, coded with LOINC and MDC and carrying a UCUM unit.

    ``value`` is ``None`` exactly when ``absent_reason`` says why (an IEEE-11073 special
    value); a number is never invented for it. ``panel`` is the LOINC code of the panel the
    value belongs to (85354-9 for the blood-pressure components), so FHIR can group them.
    Treat it as immutable.
    """

    code: str
    mdc: int | None
    value: Decimal | None
    unit: str
    measured_at: datetime | None
    flags: tuple[str, ...] = ()
    absent_reason: AbsentReason | None = None
    panel: str | None = None
    device_user: int | None = None
    # The device's own record number (glucose meters), the key for de-duplication and replay.
    sequence: int | None = None
    # A coded or sampled result takes the place of ``value`` (unit ``Unit.NONE`` when coded).
    coded: Coded | None = None
    sampled: Sampled | None = None

    def __post_init__(self) -> None:
        # Spelled out rather than summed over a generator: this runs for every stored value.
        given = ((self.value is not None) + (self.absent_reason is not None)
                 + (self.coded is not None) + (self.sampled is not None))
        if given != 1:
            if self.coded is None and self.sampled is None:
                raise ValueError(
                    f"observation {self.code}: exactly one of value and absent_reason")
            raise ValueError(f"observation {self.code}: exactly one of value, absent_reason,"
                             " coded and sampled")
        if self.measured_at is not None and self.measured_at.utcoffset() is None:
            raise ValueError(f"observation {self.code}: measured_at must be aware")

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON object (numbers stay Decimal; use ``dumps`` to serialise)."""
        return {
            "kind": "observation",
            "code": self.code,
            "mdc": self.mdc,
            "value": self.value,
            "unit": self.unit,
            "measured_at": _rfc3339(self.measured_at),
            "flags": list(self.flags),
            "absent_reason": None if self.absent_reason is None else str(self.absent_reason),
            "panel": self.panel,
            "device_user": self.device_user,
            "sequence": self.sequence,
            # Only present when set, so every numeric observation keeps its exact old form.
            **({} if self.coded is None else {"value_code": self.coded.to_json()}),
            **({} if self.sampled is None else {"sampled": self.sampled.to_json()}),
        }


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at a device: an alarm, a dispenser step, a state change."""

    type: str
    occurred_at: datetime | None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON object."""
        return {
            "kind": "event",
            "type": self.type,
            "occurred_at": _rfc3339(self.occurred_at),
            "data": self.data,
        }


Record = Observation | Event


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return utc(moment).isoformat().replace("+00:00", "Z")


# Datetimes and dataclasses go through ``_default`` (orjson would write its own forms).
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_UTC_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATACLASS


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # A Decimal is written as a JSON number with its own digits ("2.00" stays 2.00);
        # a float would lose them.
        return orjson.Fragment(_decimal_text(value))
    if isinstance(value, datetime):
        return _rfc3339(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(obj: Any) -> str:
    """Serialise to compact JSON, Decimals as numbers with their exact digits, datetimes as
    RFC 3339 UTC. orjson, because a FHIR Bundle of a thousand readings is ~1 MB of JSON."""
    return _encode(obj, _OPTIONS).decode()


def dumps_utc(obj: Any) -> bytes:
    """``dumps`` as bytes, for objects whose datetimes are all in UTC already (FHIR pages are
    built so): orjson writes those itself, the same text in a tenth of the time."""
    return _encode(obj, _UTC_OPTIONS)


def _encode(obj: Any, option: int) -> bytes:
    try:
        return orjson.dumps(obj, default=_default, option=option)
    except orjson.JSONEncodeError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValueError | TypeError):
            raise cause from None
        raise TypeError(str(exc)) from None


def _decimal_text(number: Decimal) -> str:
    if not number.is_finite():
        raise ValueError(f"non-finite number {number} has no JSON form")
    return str(number)
