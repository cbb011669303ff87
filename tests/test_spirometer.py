"""Spirometer / PEF meter document v1: sessions, plausibility, and every reject reason."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.catalogue import METRICS
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Observation, Unit, dumps
from adapters.spirometer import decode

CTX = DecodeContext()
# LOINC written out so a catalogue slip shows; the MDC codes are read from the catalogue
# because they are still pending there (None until verified against 11073-10101).
FEV1 = ("20150-9", METRICS["fev1"].mdc)
FVC = ("19868-9", METRICS["fvc"].mdc)
PEF = ("19935-6", METRICS["pef"].mdc)
AT = datetime(2024, 5, 2, 6, 15, tzinfo=UTC)  # 08:15 CEST

# Constructed from docs/DEVICE_DOCUMENTS.md: a home spirometry session, grade A, 3 blows.
SESSION = (
    b'{"v":1,"type":"spirometry","at":"2024-05-02T08:15:00+02:00","seq":118,'
    b'"fev1":{"value":2.85,"unit":"L"},"fvc":{"value":3.62,"unit":"L"},'
    b'"pef":{"value":412,"unit":"L/min"},"quality":"A","manoeuvres":3}'
)


def obs(
    codes: tuple[str, int | None],
    value: str,
    unit: Unit,
    *,
    flags: tuple[str, ...] = (),
    at: datetime = AT,
    seq: int | None = None,
) -> Observation:
    """An expected spirometry observation."""
    return Observation(
        code=codes[0], mdc=codes[1], value=Decimal(value), unit=unit, measured_at=at,
        flags=flags, sequence=seq,
    )


def assert_same(actual: list[Observation], expected: list[Observation]) -> None:
    """Equal, and every Decimal written with the same digits ("2.80" is not "2.8")."""
    assert actual == expected
    assert [str(o.value) for o in actual] == [str(o.value) for o in expected]


def doc(body: str, *, kind: str = "spirometry", at: str = "2024-05-02T08:15:00+02:00") -> bytes:
    """A v1 document with the given body fields (JSON text without braces)."""
    return f'{{"v":1,"type":"{kind}","at":"{at}",{body}}}'.encode()


def test_spirometry_session_with_grade_seq_and_all_three_values() -> None:
    flags = ("quality_grade_a",)
    expected = [
        obs(FEV1, "2.85", Unit.L, flags=flags, seq=118),
        obs(FVC, "3.62", Unit.L, flags=flags, seq=118),
        obs(PEF, "412", Unit.L_PER_MIN, flags=flags, seq=118),
    ]
    assert_same(decode(SESSION, CTX), expected)


def test_peak_flow_meter_sends_pef_only() -> None:
    payload = doc('"pef":{"value":385,"unit":"L/min"}', kind="peak_flow")
    assert_same(decode(payload, CTX), [obs(PEF, "385", Unit.L_PER_MIN)])


def test_peak_flow_meter_with_fev1_emits_both_in_fixed_order() -> None:
    # Meters such as PEF/FEV1 pocket devices report both; order is fev1, fvc, pef.
    payload = doc('"pef":{"value":385,"unit":"L/min"},"fev1":{"value":2.10,"unit":"L"}',
                  kind="peak_flow")
    expected = [obs(FEV1, "2.10", Unit.L), obs(PEF, "385", Unit.L_PER_MIN)]
    assert_same(decode(payload, CTX), expected)


def test_decimal_digits_survive_to_canonical_json() -> None:
    payload = doc('"fev1":{"value":2.80,"unit":"L"},"fvc":{"value":3.50,"unit":"L"}')
    first = decode(payload, CTX)[0]
    assert dumps(first.to_json()) == (
        f'{{"kind":"observation","code":"20150-9","mdc":{dumps(FEV1[1])},"value":2.80,"unit":"L",'
        '"measured_at":"2024-05-02T06:15:00Z","flags":[],"absent_reason":null,'
        '"panel":null,"device_user":null,"sequence":null}'
    )


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2024-05-02T08:15:00+02:00", AT),
        ("2024-05-02T06:15:00Z", AT),
        ("2024-05-02t06:15:00z", AT),
        ("2024-05-02T06:15:00.123456789-00:00", AT.replace(microsecond=123456)),
        ("2024-05-02T01:15:00-05:00", AT),
    ],
)
def test_timestamp_is_rfc3339_with_offset_and_stored_in_utc(at: str, expected: datetime) -> None:
    payload = doc('"pef":{"value":385,"unit":"L/min"}', kind="peak_flow", at=at)
    assert_same(decode(payload, CTX), [obs(PEF, "385", Unit.L_PER_MIN, at=expected)])


def test_plausibility_bounds_are_inclusive() -> None:
    inside = doc('"fev1":{"value":0.1,"unit":"L"},"fvc":{"value":10.0,"unit":"L"},'
                 '"pef":{"value":20,"unit":"L/min"}')
    outside = doc('"fev1":{"value":0.09,"unit":"L"},"fvc":{"value":10.01,"unit":"L"},'
                  '"pef":{"value":1001,"unit":"L/min"}')
    assert [o.flags for o in decode(inside, CTX)] == [(), (), ()]
    assert [o.flags for o in decode(outside, CTX)] == [("implausible",)] * 3


def test_negative_volume_is_kept_and_flagged_not_rejected() -> None:
    payload = doc('"fev1":{"value":-1.2,"unit":"L"},"fvc":{"value":3.1,"unit":"L"}')
    expected = [obs(FEV1, "-1.2", Unit.L, flags=("implausible",)), obs(FVC, "3.1", Unit.L)]
    assert_same(decode(payload, CTX), expected)


def test_fev1_above_fvc_flags_both_but_not_pef() -> None:
    payload = doc('"fev1":{"value":3.9,"unit":"L"},"fvc":{"value":3.6,"unit":"L"},'
                  '"pef":{"value":450,"unit":"L/min"},"quality":"C","manoeuvres":2')
    session = ("quality_grade_c", "fewer_than_3_manoeuvres")
    expected = [
        obs(FEV1, "3.9", Unit.L, flags=(*session, "fev1_exceeds_fvc")),
        obs(FVC, "3.6", Unit.L, flags=(*session, "fev1_exceeds_fvc")),
        obs(PEF, "450", Unit.L_PER_MIN, flags=session),
    ]
    assert_same(decode(payload, CTX), expected)


def test_unknown_fields_are_tolerated_and_flagged() -> None:
    # An additive field from newer firmware (and one inside a value) keeps v=1.
    payload = doc('"pef":{"value":385,"unit":"L/min","best_of":3},"zone":"green"',
                  kind="peak_flow")
    expected = [obs(PEF, "385", Unit.L_PER_MIN, flags=("unknown_fields",))]
    assert_same(decode(payload, CTX), expected)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"v":2,"type":"spirometry"}', "unsupported document version 2 (supported: 1)"),
        (b'{"type":"spirometry"}', "v: missing document version (supported: 1)"),
        (b'{"v":"1"}', "v: expected an integer version, got '1'"),
        (b'{"v":true}', "v: expected an integer version, got True"),
        (b'{"v":1.0}', "v: expected an integer version, got Decimal('1.0')"),
        (doc('"fev1":{"value":2.85,"unit":"mL"},"fvc":{"value":3.6,"unit":"L"}'),
         "fev1.unit: Input should be 'L' (got 'mL')"),
        (doc('"pef":{"value":6.8,"unit":"L/s"}', kind="peak_flow"),
         "pef.unit: Input should be 'L/min' (got 'L/s')"),
        (doc('"fev1":{"value":2.85,"unit":"L"}'), "fvc: required when type is 'spirometry'"),
        (doc('"fev1":{"value":2.85,"unit":"L"}', kind="peak_flow"),
         "pef: required when type is 'peak_flow'"),
        (doc('"fev1":{"value":"2.85","unit":"L"},"fvc":{"value":3.6,"unit":"L"}'),
         "fev1.value: expected a JSON number (got '2.85')"),
        (doc('"fev1":{"value":1e400,"unit":"L"},"fvc":{"value":3.6,"unit":"L"}'),
         "fev1.value: number has too many digits or too large an exponent (got Decimal('1E+400'))"),
        (doc('"pef":{"value":385,"unit":"L/min"},"manoeuvres":true', kind="peak_flow"),
         "manoeuvres: Input should be a valid integer (got True)"),
        (doc('"pef":{"value":385,"unit":"L/min"},"quality":"G"', kind="peak_flow"),
         "quality: Input should be 'A', 'B', 'C', 'D', 'E', 'F' or 'U' (got 'G')"),
        (doc('"pef":{"value":385,"unit":"L/min"}', kind="spirometer"),
         "type: Input should be 'spirometry' or 'peak_flow' (got 'spirometer')"),
        (doc('"pef":{"value":385,"unit":"L/min"}', kind="peak_flow", at="2024-05-02T08:15:00"),
         "at: expected an RFC 3339 date-time with offset, e.g. 2024-05-02T08:15:00Z "
         "(got '2024-05-02T08:15:00')"),
        (doc('"pef":{"value":385,"unit":"L/min"}', kind="peak_flow", at="2024-02-30T08:15:00Z"),
         "at: not a valid date-time (got '2024-02-30T08:15:00Z')"),
        # Valid text, but before year 1 in UTC: refused, not an OverflowError.
        (doc('"pef":{"value":385,"unit":"L/min"}', kind="peak_flow",
             at="0001-01-01T00:00:00+01:00"),
         "at: not a valid date-time (got '0001-01-01T00:00:00+01:00')"),
        (b'{"v":1,"type":"peak_flow","at":"2024-05-02T08:15:00Z"}',
         "pef: required when type is 'peak_flow'"),
        (b'{"v":1,"type":"peak_flow"}', "at: field required"),
    ],
)
def test_spirometer_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("spirometer", reason)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "invalid JSON: Expecting value at offset 0"),
        (b"[1]", "expected a JSON object, got list"),
        (b'{"v":1,"v":1}', "invalid JSON: duplicate key 'v'"),
        (b'{"v":NaN}', "invalid JSON: NaN is not a JSON number"),
        (b'{"v":-Infinity}', "invalid JSON: -Infinity is not a JSON number"),
        (b'{"v":1,"x":"\xff"}', "payload is not UTF-8 (byte 12)"),
        (b"[" * 9 + b"]" * 9, "JSON nested deeper than 8 levels"),
        (b'{"v":' + b"9" * 5000 + b"}",
         "invalid JSON: Exceeds the limit (4300 digits) for integer string conversion"),
        (b'{"v":1,"pad":"' + b"x" * 65536 + b'"}', "payload is 65552 bytes; the limit is 65536"),
        (b'{"v":1', "invalid JSON: Expecting ',' delimiter at offset 6"),
        # Escapes JSON allows but storage cannot take: NUL (jsonb), a lone surrogate (UTF-8).
        (b'{"v":1,"note":"a\\u0000b"}', "invalid JSON: NUL or unpaired surrogate in 'a\\x00b'"),
        (b'{"v":1,"\\ud800":1}', "invalid JSON: NUL or unpaired surrogate in '\\ud800'"),
        (b'{"v":1,"x":[{"y":["\\udfff"]}]}',
         "invalid JSON: NUL or unpaired surrogate in '\\udfff'"),
    ],
)
def test_untrusted_bytes_are_rejected_before_validation(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("spirometer", reason)


def test_deep_nesting_is_refused_without_recursing() -> None:
    # 30 000 levels would blow Python's recursion limit inside json; the pre-scan stops it.
    with pytest.raises(DecodeError) as caught:
        decode(b"[" * 30000 + b"]" * 30000, CTX)
    assert caught.value.reason == "JSON nested deeper than 8 levels"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    payload = doc('"pef":{"value":385,"unit":"L/min"},"note":"[[[[[[[[[[\\"{{{{{{{{{"',
                  kind="peak_flow")
    expected = [obs(PEF, "385", Unit.L_PER_MIN, flags=("unknown_fields",))]
    assert_same(decode(payload, CTX), expected)
