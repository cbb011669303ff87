"""Digital night supervision (document v1): events, refused images, docs, end to end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters import night_supervision
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, dumps
from gateway.services.mosquitto import MosquittoProcess
from simulators import documents_home as sim
from simulators.devices_home import NightSupervision
from tests.home_flow import documented_example, documented_schema, resources, run

CTX = DecodeContext()
CHECK = '"check":{"id":"C-1","scheduled_at":"2024-05-03T00:30:00Z"}'


def doc(kind: str, body: str = "") -> bytes:
    tail = f",{body}" if body else ""
    return f'{{"v":1,"type":"{kind}","at":"2024-05-03T00:34:10Z"{tail}}}'.encode()


def test_check_done_carries_the_check_and_the_staff_credential() -> None:
    payload = doc("check_done", CHECK + ',"method":"camera","credential":"staff-0421"')
    assert night_supervision.decode(payload, CTX) == [Event(
        "night_supervision.check_done", datetime(2024, 5, 3, 0, 34, 10, tzinfo=UTC),
        {"check_id": "C-1", "scheduled_at": "2024-05-03T00:30:00Z", "method": "camera",
         "credential": "staff-0421"})]


def test_camera_offline_needs_no_check() -> None:
    (event,) = night_supervision.decode(doc("camera_offline", '"room":"bedroom"'), CTX)
    assert (event.type, event.data) == ("night_supervision.camera_offline", {"room": "bedroom"})


@pytest.mark.parametrize(("body", "field"), [
    ('"snapshot":"AAAA"', "snapshot"),
    ('"check":{"id":"C-1","scheduled_at":"2024-05-03T00:30:00Z","thumbnail_url":"x"}',
     "check.thumbnail_url"),
    ('"room":"data:image/png;base64,iVBORw0KGgo="', "room"),
    ('"note":"/9j/4AAQSkZJRgABAQ"', "note"),
    ('"evidence":["' + "A" * 300 + '"]', "evidence.0"),
    ('"Frame":{"w":640}', "Frame"),
])
def test_any_image_data_is_refused_naming_the_field(body: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        night_supervision.decode(doc("check_done", body if "check" in body
                                     else f"{CHECK},{body}"), CTX)
    assert caught.value.reason == (f"{field}: image data is refused; night supervision sends "
                                   "events only, never images")


@pytest.mark.parametrize(("payload", "reason"), [
    (doc("check_missed"), "check: required when type is 'check_missed'"),
    (doc("asleep"), "type: Input should be 'check_done', 'check_missed', 'not_in_bed', "
     "'camera_offline' or 'camera_online' (got 'asleep')"),
    (doc("check_done", CHECK + ',"credential":"19121212-1212"'),
     "credential: looks like a personal identity number; send the staff credential id "
     "(got '19121212-1212')"),
])
def test_night_supervision_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        night_supervision.decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("night_supervision", reason)


def test_builder_round_trips_and_the_docs_match_the_adapter() -> None:
    at = datetime(2024, 5, 3, 0, 30, tzinfo=UTC)
    payload = sim.night_supervision("check_missed", at, check_id="C-9", scheduled_at=at)
    assert night_supervision.decode(payload, CTX)[0].data == {
        "check_id": "C-9", "scheduled_at": "2024-05-03T00:30:00Z"}
    assert documented_schema("night_supervision") == night_supervision.json_schema()
    example, shown = documented_example("night_supervision")
    assert [dumps(r.to_json()) for r in night_supervision.decode(example, CTX)] == shown


def test_a_night_of_checks_is_stored_as_events_and_no_observation(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    run_ = run(database_url, mosquitto.url, model="sim-night-supervision",
               device_cls=NightSupervision, readings=4)
    assert run_.observations == [] and resources(run_.bundle) == []
    stored = [t for t, _ in run_.stored_events if t.startswith("night_supervision.")]
    assert sorted(stored) == sorted(e.type for e in run_.events
                                    if e.type.startswith("night_supervision."))
    assert len(stored) >= 4
