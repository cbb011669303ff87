"""Urine test-strip reader (document v1): coded pads, a panel, rejects, docs, end to end."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters import urinalysis
from adapters.errors import DecodeError
from adapters.model import Coded, DecodeContext, Observation, Unit, dumps
from gateway.services.mosquitto import MosquittoProcess
from simulators import documents_home as sim
from simulators.devices_home import UrineReader
from tests.home_flow import documented_example, documented_schema, resources, run

CTX = DecodeContext()
AT = datetime(2024, 5, 2, 5, 5, tzinfo=UTC)
SCT = "http://snomed.info/sct"


def doc(results: str) -> bytes:
    return (f'{{"v":1,"type":"urinalysis","at":"2024-05-02T07:05:00+02:00",'
            f'"results":{{{results}}}}}').encode()


def coded(code: str, sct: str, display: str, rank: int) -> Observation:
    return Observation(code, None, None, Unit.NONE, AT, panel="50556-0",
                       coded=Coded(SCT, sct, display, rank))


@pytest.mark.parametrize(("text", "sct", "display", "rank"), [
    ("negative", "260385009", "Negative", 0), ("trace", "260405006", "Trace", 1),
    ("1+", "260347006", "+", 2), ("2+", "260348001", "++", 3),
    ("3+", "260349009", "+++", 4), ("4+", "260350009", "++++", 5),
])
def test_ordinal_pad_is_a_snomed_qualifier_with_its_rank(
        text: str, sct: str, display: str, rank: int) -> None:
    assert urinalysis.decode(doc(f'"glucose":"{text}"'), CTX) == [
        coded("25428-4", sct, display, rank)]


def test_a_whole_strip_in_pad_order_with_numbers_for_ph_and_gravity() -> None:
    payload = doc('"specific_gravity":1.050,"ph":6.5,"nitrite":"positive","leukocytes":"1+",'
                  '"ketones":"negative","protein":"trace","blood":"negative","glucose":"negative",'
                  '"bilirubin":"negative"')
    result = urinalysis.decode(payload, CTX)
    assert [o.code for o in result] == ["25428-4", "20454-5", "5794-3", "5799-2", "5802-4",
                                        "2514-8", "5770-3", "5803-2", "5811-5"]
    assert result[4].coded == Coded(SCT, "10828004", "Positive", 1)
    assert result[7] == Observation("5803-2", None, Decimal("6.5"), Unit.PH, AT,
                                    panel="50556-0")
    assert result[8] == Observation("5811-5", None, Decimal("1.050"), Unit.NONE, AT,
                                    ("implausible",), panel="50556-0")


@pytest.mark.parametrize(("payload", "reason"), [
    (doc(""), "results: no pad read; send one of glucose, protein, blood, leukocytes, "
     "nitrite, ketones, bilirubin, ph, specific_gravity"),
    (doc('"glucose":"5+"'), "results.glucose: Input should be 'negative', 'trace', '1+', "
     "'2+', '3+' or '4+' (got '5+')"),
    (doc('"nitrite":"trace"'),
     "results.nitrite: Input should be 'negative' or 'positive' (got 'trace')"),
    (doc('"ph":"6"'), "results.ph: expected a JSON number (got '6')"),
    (b'{"v":1,"type":"urinalysis","at":"2024-05-02T07:05:00Z"}', "results: field required"),
])
def test_urinalysis_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        urinalysis.decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("urinalysis", reason)


def test_builder_round_trips_and_the_docs_match_the_adapter() -> None:
    payload = sim.urinalysis(AT, {"protein": "2+", "ph": Decimal("7.0")}, strip="Combur-7")
    assert [o.code for o in urinalysis.decode(payload, CTX)] == ["20454-5", "5803-2"]
    assert documented_schema("urinalysis") == urinalysis.json_schema()
    example, shown = documented_example("urinalysis")
    assert [dumps(r.to_json()) for r in urinalysis.decode(example, CTX)] == shown


def test_strips_reach_the_clinician_as_one_fhir_panel_each(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    run_ = run(database_url, mosquitto.url, model="sim-urine", device_cls=UrineReader,
               readings=4)
    found = resources(run_.bundle)
    assert len(found) == 4
    coded_items = [i for i in run_.api_items if "value_code" in i]
    assert len(coded_items) == 4 * 6 and all(i["value"] is None for i in coded_items)
    for panel in found:
        assert panel["code"]["coding"][0]["code"] == "50556-0"
        assert panel["category"][0]["coding"][0]["code"] == "laboratory"
        by_code = {c["code"]["coding"][0]["code"]: c for c in panel["component"]}
        assert len(by_code) == 8
        glucose = by_code["25428-4"]["valueCodeableConcept"]
        assert glucose["coding"][0]["system"] == SCT
        assert glucose["coding"][0]["code"] == "260385009"
        assert glucose["coding"][0]["extension"][0]["valueDecimal"] == 0
        assert by_code["5803-2"]["valueQuantity"]["code"] == "[pH]"
