"""Home tonometer (document v1): per-eye IOP, rejects, docs, and end to end."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters import tonometer
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Observation, Unit, dumps
from gateway.services.mosquitto import MosquittoProcess
from simulators import documents_home as sim
from simulators.devices_home import Tonometer
from tests.home_flow import documented_example, documented_schema, resources, run

CTX = DecodeContext()
AT = datetime(2024, 5, 2, 5, 40, tzinfo=UTC)
RIGHT, LEFT = "79892-6", "79893-4"


def doc(body: str) -> bytes:
    return f'{{"v":1,"type":"iop","at":"2024-05-02T07:40:00+02:00",{body}}}'.encode()


def iop(code: str, value: str, *flags: str) -> Observation:
    return Observation(code, None, Decimal(value), Unit.MMHG, AT, tuple(flags))


def test_both_eyes_right_first_with_the_side_in_the_loinc_code() -> None:
    payload = doc('"left":{"value":21,"unit":"mm[Hg]"},"right":{"value":17.5,"unit":"mm[Hg]"}')
    assert tonometer.decode(payload, CTX) == [iop(RIGHT, "17.5"), iop(LEFT, "21")]


def test_one_eye_with_range_quality_and_position_flags() -> None:
    payload = doc('"left":{"value":50,"unit":"mm[Hg]","comparator":">","quality":"low"},'
                  '"position":"supine"')
    assert tonometer.decode(payload, CTX) == [
        iop(LEFT, "50", "result_above_range", "quality_low", "position_supine")]


def test_implausible_value_is_kept_and_flagged() -> None:
    assert tonometer.decode(doc('"right":{"value":95,"unit":"mm[Hg]"}'), CTX) == [
        iop(RIGHT, "95", "implausible")]


@pytest.mark.parametrize(("payload", "reason"), [
    (doc('"position":"sitting"'), "right, left: at least one eye is required"),
    (doc('"right":{"value":17,"unit":"kPa"}'),
     "right.unit: Input should be 'mm[Hg]' (got 'kPa')"),
    (doc('"right":{"value":17,"unit":"mm[Hg]","quality":"ok"}'),
     "right.quality: Input should be 'high', 'medium' or 'low' (got 'ok')"),
    (b'{"v":1,"type":"iop"}', "at: field required"),
])
def test_tonometer_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        tonometer.decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("tonometer", reason)


def test_builder_round_trips_and_the_docs_match_the_adapter() -> None:
    payload = sim.intraocular_pressure(AT, right=Decimal(16), quality="high")
    assert tonometer.decode(payload, CTX) == [iop(RIGHT, "16", "quality_high")]
    assert documented_schema("tonometer") == tonometer.json_schema()
    example, shown = documented_example("tonometer")
    assert [dumps(r.to_json()) for r in tonometer.decode(example, CTX)] == shown


def test_eye_pressures_reach_the_clinician_as_exam_fhir(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    run_ = run(database_url, mosquitto.url, model="sim-tonometer", device_cls=Tonometer,
               readings=6)
    found = resources(run_.bundle)
    assert len(found) == len(run_.observations) == 12
    codes = {r["code"]["coding"][0]["code"]: r["code"]["coding"][0]["display"] for r in found}
    assert codes == {RIGHT: "Right eye Intraocular pressure",
                     LEFT: "Left eye Intraocular pressure"}
    for resource in found:
        assert resource["category"][0]["coding"][0]["code"] == "exam"
        assert resource["valueQuantity"]["code"] == "mm[Hg]"
        assert resource["valueQuantity"]["unit"] == "mmHg"
