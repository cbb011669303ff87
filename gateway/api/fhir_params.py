"""The parameters of ``GET /fhir/r4/Observation``, checked one by one; every refusal names the
parameter and what would be accepted (DESIGN.md: every API error names what was wrong).

A FHIR server may ignore parameters it does not know; this one refuses them, so a client never
mistakes an unfiltered answer for a filtered one. ``_format`` and ``_pretty`` are ignored: the
answer is always ``application/fhir+json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from adapters.catalogue import LOINC, MDC
from gateway.api.fhir import PANELS
from gateway.api.queries import MAX_PAGE, CursorError, range_problem
from gateway.api.readings import ReadingKey, decode_reading_cursor

DEFAULT_COUNT = 50
MAX_CODES = 10
MAX_DATES = 4
# Name -> (FHIR search type, what the CapabilityStatement says of it).
SEARCH_PARAMS: dict[str, tuple[str, str]] = {
    "subject": ("reference", "Patient/{ref} or a bare reference: the caller's own patient "
                             "reference, as given at assignment"),
    "code": ("token", f"system|code with system {LOINC} or {MDC}, or a bare code of either; "
                      f"comma-separated for any of up to {MAX_CODES}. A component's code "
                      "(systolic 8480-6 / 150021) finds its blood-pressure panel"),
    "date": ("date", "prefixes eq, ge, gt, le, lt on the time of measurement; YYYY-MM-DD (a "
                     "UTC day) or a date-time with Z or an offset, naming its minute, second "
                     "or (with fractions) instant; repeat for a range. A lower bound may lie "
                     "at most 366 days before the upper bound (or before now); without a "
                     "lower bound the search is open and read page by page"),
    "device": ("reference", "Device/{id} or a bare device id"),
    "_count": ("number", f"readings per page, 1-{MAX_PAGE}, default {DEFAULT_COUNT}; a "
                         "blood-pressure panel counts as one"),
    "_sort": ("special", "-date (newest first, the default) or date (oldest first)"),
}
_PAGING = "_cursor"  # ours, only ever taken from a next link
_IGNORED = frozenset({"_format", "_pretty"})
_PREFIXES = ("eq", "ge", "gt", "le", "lt")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_LOINC_CODE = re.compile(r"^\d{1,8}-\d$")


class SearchError(ValueError):
    """A search parameter is not acceptable; the message names it."""


@dataclass(frozen=True, slots=True)
class ObservationSearch:
    """A checked Observation search."""

    patient_ref: str | None = None
    device_id: str | None = None
    loinc: tuple[str, ...] = ()
    mdc: tuple[int, ...] = ()
    panels: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    since_inclusive: bool = True
    until_inclusive: bool = False
    count: int = DEFAULT_COUNT
    newest_first: bool = True
    after: ReadingKey | None = None


def parse(items: Iterable[tuple[str, str]], now: datetime) -> ObservationSearch:
    """Check the query string's (name, value) pairs and build the search."""
    given: dict[str, list[str]] = {}
    for name, value in items:
        given.setdefault(name, []).append(value)
    unknown = sorted(set(given) - set(SEARCH_PARAMS) - {_PAGING} - _IGNORED)
    if unknown:
        raise SearchError(f"unknown search parameter {', '.join(unknown)}; supported: "
                          f"{', '.join(SEARCH_PARAMS)}")
    for name, values in given.items():
        if name != "date" and name not in _IGNORED and len(values) > 1:
            raise SearchError(f"{name} is given {len(values)} times; give it once")
    one = {name: values[0] for name, values in given.items()}
    patient = _reference(one.get("subject"), "subject", "Patient")
    device = _reference(one.get("device"), "device", "Device")
    if patient is None and device is None:
        raise SearchError("give subject (Patient/{ref}) or device (Device/{id}): a search names"
                          " a patient or a device")
    newest_first = _sort(one.get("_sort", "-date"))
    after = None
    if _PAGING in one:
        try:
            after = decode_reading_cursor(one[_PAGING], newest_first=newest_first)
        except CursorError as exc:
            raise SearchError(str(exc)) from exc
    loinc, mdc, panels = _codes(one.get("code"))
    since, since_inclusive, until, until_inclusive = _dates(given.get("date", []), now)
    return ObservationSearch(patient_ref=patient, device_id=device, loinc=loinc, mdc=mdc,
                             panels=panels, since=since, since_inclusive=since_inclusive,
                             until=until, until_inclusive=until_inclusive,
                             count=_count(one.get("_count")), newest_first=newest_first,
                             after=after)


def _reference(value: str | None, name: str, kind: str) -> str | None:
    if value is None:
        return None
    ref = value.removeprefix(f"{kind}/")
    if "/" in ref or not ref:
        raise SearchError(f"{name} must be {kind}/{{id}} or a bare id, not {value!r}")
    if kind == "Device" and not _ID.fullmatch(ref):
        raise SearchError(f"device id {ref!r} must be 1-64 letters, digits, '-' or '.'")
    return ref


def _sort(value: str) -> bool:
    if value == "-date":
        return True
    if value == "date":
        return False
    raise SearchError(f"_sort={value!r} is not supported; use -date (newest first, the default)"
                      " or date (oldest first)")


def _count(value: str | None) -> int:
    if value is None:
        return DEFAULT_COUNT
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise SearchError(f"_count must be a whole number from 1 to {MAX_PAGE}, not {value!r}")
    return int(value)


def _codes(value: str | None) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    if value is None:
        return (), (), ()
    tokens = value.split(",")
    if len(tokens) > MAX_CODES:
        raise SearchError(f"code lists {len(tokens)} codes; at most {MAX_CODES}")
    loinc: list[str] = []
    mdc: list[int] = []
    panels: list[str] = []
    for token in tokens:
        system, bar, code = token.rpartition("|")
        if not bar:
            system = ""
        if system not in ("", LOINC, MDC):
            raise SearchError(f"code system {system!r} is not supported; use {LOINC} or {MDC}")
        if system in ("", LOINC) and _LOINC_CODE.fullmatch(code):
            loinc.append(code)
        elif system in ("", MDC) and code.isdigit() and len(code) <= 10:
            number = int(code)
            panel = next((p for p, m in PANELS.items() if m.mdc == number), None)
            if panel is not None:
                panels.append(panel)
            else:
                mdc.append(number)
        else:
            raise SearchError(f"code {token!r} is neither a LOINC code (like 8480-6) nor an "
                              "MDC code (like 150021)")
    return tuple(loinc), tuple(mdc), tuple(panels)


Bounds = tuple[datetime | None, bool, datetime | None, bool]


def _dates(values: list[str], now: datetime) -> Bounds:
    if len(values) > MAX_DATES:
        raise SearchError(f"date is given {len(values)} times; at most {MAX_DATES}")
    lower: list[tuple[datetime, bool, str]] = []
    upper: list[tuple[datetime, bool, str]] = []
    for raw in values:
        prefix, text = (raw[:2], raw[2:]) if raw[:2].isalpha() else ("eq", raw)
        if prefix not in _PREFIXES:
            raise SearchError(f"date prefix {prefix!r} in {raw!r} is not supported; use "
                              f"{', '.join(_PREFIXES)}")
        start, end = _period(raw, text)
        # FHIR date search: a value names a period (a day, a minute, a second, or an instant
        # when fractions are given); ge/lt compare with its start, gt/le with its end.
        instant = start == end
        if prefix in ("ge", "eq"):
            lower.append((start, True, raw))
        if prefix == "gt":
            lower.append((start, False, raw) if instant else (end, True, raw))
        if prefix == "lt":
            upper.append((start, False, raw))
        if prefix in ("le", "eq"):
            upper.append((start, True, raw) if instant else (end, False, raw))
    # Several bounds on one side: the tightest one holds.
    since: datetime | None = None
    until: datetime | None = None
    since_inclusive, until_inclusive = True, False
    lower_name = upper_name = ""
    if lower:
        since, since_inclusive, lower_name = max(lower, key=lambda b: (b[0], not b[1]))
    if upper:
        until, until_inclusive, upper_name = min(upper, key=lambda b: (b[0], b[1]))
    problem = range_problem(since, until, now, lower=f"date={lower_name}",
                            upper=f"date={upper_name}")
    if problem is not None:
        raise SearchError(problem)
    return since, since_inclusive, until, until_inclusive


_CLOCK = re.compile(r"^\d{2}:\d{2}(?P<seconds>:\d{2})?(?P<fraction>[.,]\d+)?")


def _period(raw: str, text: str) -> tuple[datetime, datetime]:
    """The start and end of what a date value names: a UTC day, a minute or second given
    without fractions, or an instant (start == end)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SearchError(f"date {raw!r} is not [eq|ge|gt|le|lt]YYYY-MM-DD or "
                          "[eq|ge|gt|le|lt]YYYY-MM-DDThh:mm:ss with Z or an offset") from exc
    if "T" not in text:
        if len(text) != 10:
            raise SearchError(f"date {raw!r}: a day is written YYYY-MM-DD")
        day = moment.replace(tzinfo=UTC)
        return day, day + timedelta(days=1)
    if moment.tzinfo is None:
        raise SearchError(f"date {raw!r} needs a zone offset (Z or +hh:mm)")
    clock = _CLOCK.match(text.split("T", 1)[1])
    if clock is None or clock["fraction"]:
        return moment, moment
    return moment, moment + (timedelta(seconds=1) if clock["seconds"] else timedelta(minutes=1))
