"""IBD home test (calprotectin document v1): decoding, rejects, docs, and end to end."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters import calprotectin
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, Observation, Unit, dumps
from gateway.services.mosquitto import MosquittoProcess
from simulators import documents_home as sim
from simulators.devices_home import CalprotectinTest
from tests.home_flow import documented_example, documented_schema, resources, run

CTX = DecodeContext()
AT = datetime(2024, 5, 2, 6, 15, tzinfo=UTC)


def doc(body: str, kind: str = "calprotectin") -> bytes:
    return f'{{"v":1,"type":"{kind}","at":"2024-05-02T08:15:00+02:00",{body}}}'.encode()


def obs(value: str, *flags: str, seq: int | None = None) -> Observation:
    return Observation("38445-3", None, Decimal(value), Unit.UG_PER_G, AT, tuple(flags),
                       sequence=seq)


def test_result_in_range_is_one_loinc_38445_3_observation() -> None:
    payload = doc('"seq":41,"calprotectin":{"value":85,"unit":"ug/g"},"lot":"L2405"')
    assert calprotectin.decode(payload, CTX) == [obs("85", seq=41)]


@pytest.mark.parametrize(("body", "expected"), [
    ('{"value":30,"unit":"ug/g","comparator":"<"}', obs("30", "result_below_range")),
    ('{"value":1000,"unit":"ug/g","comparator":">"}', obs("1000", "result_above_range")),
    ('{"value":6001,"unit":"ug/g"}', obs("6001", "implausible")),
    ('{"value":120.5,"unit":"ug/g","well":2}', obs("120.5", "unknown_fields")),
])
def test_range_limits_and_plausibility_become_flags(body: str, expected: Observation) -> None:
    (result,) = calprotectin.decode(doc(f'"calprotectin":{body}'), CTX)
    assert result == expected
    assert str(result.value) == str(expected.value)


def test_invalid_test_is_an_event_without_a_number() -> None:
    payload = doc('"seq":42,"lot":"L2405","reason":"control_line_missing"', "test_invalid")
    assert calprotectin.decode(payload, CTX) == [Event(
        "calprotectin.test_invalid", AT,
        {"reason": "control_line_missing", "lot": "L2405", "seq": 42})]


@pytest.mark.parametrize(("payload", "reason"), [
    (doc('"calprotectin":{"value":85,"unit":"mg/kg"}'),
     "calprotectin.unit: Input should be 'ug/g' (got 'mg/kg')"),
    (doc('"lot":"L1"'), "calprotectin: required when type is 'calprotectin'"),
    (doc('"lot":"L1"', "test_invalid"), "reason: required when type is 'test_invalid'"),
    (doc('"calprotectin":{"value":"85","unit":"ug/g"}'),
     "calprotectin.value: expected a JSON number (got '85')"),
    (doc('"calprotectin":{"value":85,"unit":"ug/g","comparator":"<="}'),
     "calprotectin.comparator: Input should be '<' or '>' (got '<=')"),
    (b'{"v":2,"type":"calprotectin"}', "unsupported document version 2 (supported: 1)"),
])
def test_calprotectin_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        calprotectin.decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("calprotectin", reason)


def test_builder_round_trips_and_the_docs_match_the_adapter() -> None:
    at = datetime(2024, 5, 2, 8, 15, tzinfo=UTC)
    payload = sim.calprotectin(at, Decimal(30), comparator="<", seq=3)
    assert payload == (b'{"v":1,"type":"calprotectin","at":"2024-05-02T08:15:00Z","seq":3,'
                       b'"calprotectin":{"value":30,"unit":"ug/g","comparator":"<"}}')
    (result,) = calprotectin.decode(payload, CTX)
    assert isinstance(result, Observation) and result.flags == ("result_below_range",)
    assert documented_schema("calprotectin") == calprotectin.json_schema()
    example, shown = documented_example("calprotectin")
    assert [dumps(r.to_json()) for r in calprotectin.decode(example, CTX)] == shown


def test_home_tests_reach_the_clinician_as_laboratory_fhir(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    run_ = run(database_url, mosquitto.url, model="sim-calprotectin",
               device_cls=CalprotectinTest, readings=12)
    assert run_.observations, "the simulator sent results"
    found = resources(run_.bundle)
    assert len(found) == len(run_.observations)
    for resource in found:
        assert resource["code"]["coding"] == [{"system": "http://loinc.org", "code": "38445-3",
                                               "display": "Calprotectin [Mass/mass] in Stool"}]
        assert resource["category"][0]["coding"][0]["code"] == "laboratory"
        assert resource["valueQuantity"]["code"] == "ug/g"
        assert resource["device"] == {"reference": f"Device/{run_.device_id}"}
    values = sorted(Decimal(str(r["valueQuantity"]["value"])) for r in found)
    assert values == sorted(o.value for o in run_.observations if o.value is not None)
    invalid = [e for e in run_.events if e.type == "calprotectin.test_invalid"]
    assert [t for t, _ in run_.stored_events if t == "calprotectin.test_invalid"] == [
        e.type for e in invalid]
