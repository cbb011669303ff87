"""Orders from the ordering portal: CSV import and its refusals, delivery by assignment,
Swedish working days at their edges, and the lead-time report's figures."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from gateway.auth import Role
from gateway.cli import main
from provisioning import lead_times, orders, service
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from provisioning.workdays import ZONE, is_working_day, lead_time
from tests.support import SECRET, Fleet, api_client, bearer, seed

HEADER = "order_id,principal,unit,patient,model,article_number,ordered_at\n"


def _local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE)


@pytest.mark.parametrize(("ordered", "delivered", "days"), [
    ("2025-03-03 09:00", "2025-03-04 15:00", 1),   # Monday to Tuesday
    ("2025-03-03 09:00", "2025-03-03 16:00", 0),   # the same day
    ("2025-03-03 23:30", "2025-03-04 08:00", 1),   # after hours: the date counts, not the hour
    ("2025-03-07 10:00", "2025-03-10 10:00", 1),   # Friday to Monday
    ("2025-03-08 10:00", "2025-03-10 10:00", 0),   # Saturday: as if placed on Monday
    ("2025-03-08 10:00", "2025-03-11 10:00", 1),
    ("2025-03-03 09:00", "2025-03-12 09:00", 7),   # seven working days: within the target
    ("2025-03-03 09:00", "2025-03-13 09:00", 8),
    ("2025-04-17 09:00", "2025-04-22 09:00", 1),   # Maundy Thursday over Easter to Tuesday
    ("2025-04-18 09:00", "2025-04-22 09:00", 0),   # placed on Good Friday
    ("2025-06-19 09:00", "2025-06-23 09:00", 1),   # over midsummer eve and day
    ("2025-06-20 09:00", "2025-06-23 09:00", 0),   # placed on midsummer eve
    ("2025-12-23 09:00", "2025-12-29 09:00", 1),   # over Christmas eve, day and Boxing day
    ("2025-12-29 09:00", "2026-01-07 09:00", 4),   # New Year's eve and day, Epiphany
    ("2025-03-05 10:00", "2025-03-04 10:00", 0),   # a delivery before the order: nothing
])
def test_lead_time_in_swedish_working_days(ordered: str, delivered: str, days: int) -> None:
    assert lead_time(_local(ordered), _local(delivered)) == days


def test_working_days_leave_out_weekends_holidays_and_the_three_eves() -> None:
    closed = [date(2025, 6, 20), date(2025, 12, 24), date(2025, 12, 31), date(2025, 4, 18),
              date(2025, 4, 21), date(2025, 5, 29), date(2025, 6, 6), date(2026, 1, 6),
              date(2025, 3, 8), date(2025, 3, 9)]
    assert [day for day in closed if is_working_day(day)] == []
    # Ordinary weekdays, and the day after a holiday, are working days.
    assert all(is_working_day(day) for day in (date(2025, 3, 10), date(2025, 4, 22),
                                                date(2026, 1, 2), date(2025, 12, 30)))
    # Stockholm's date decides: 23:30 UTC on a Friday is already Saturday there.
    assert lead_time(datetime(2025, 3, 7, 23, 30, tzinfo=UTC),
                     datetime(2025, 3, 10, 9, 0, tzinfo=UTC)) == 0


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


def _import(url: str, text: str, only: str | None = None) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        return orders.import_csv(conn, SECRET, text, actor="t", only_principal=only)


GOOD = (HEADER
        + "W-1,20,Hemtjänst Falun,p-1,bpm,,2025-03-03 09:00\n"
        + "W-2,20,,p-2,,ART-9,2025-03-03T08:00:00Z\n")


def test_orders_import_idempotently_and_bad_rows_are_named_by_line(database_url: str,
                                                                   fleet: Fleet) -> None:
    text = (GOOD
            + "W-3,20,,,bpm,,2025-03-03 09:00\n"
            + "W-4,20,,p-4,bpm,,yesterday\n"
            + "W-5,9999,,p-5,bpm,,2025-03-03 09:00\n"
            + "W-6,20,,p-6,,,2025-03-03 09:00\n"
            + "W-1,20,,p-1,bpm,,2025-03-03 09:00\n"
            + "W-7,20,,p-7,bpm,,2025-03-03\n"
            + "W-8,20,,p-8,bpm\n"
            + "W 9,20,,p-9,bpm,,2025-03-03 09:00\n")
    result = _import(database_url, text)
    assert result["counts"] == {"rows": 10, "imported": 2, "unchanged": 0, "refused": 8}
    assert [r["reason"] for r in result["refused"]] == [  # type: ignore[attr-defined]
        "line 4: patient is empty",
        "line 5: ordered_at 'yesterday' is not an ISO 8601 time (e.g. 2025-04-17 14:30 or"
        " 2025-04-17T12:30:00Z)",
        "line 6: principal 9999 does not exist",
        "line 7: give model or article_number (what was ordered)",
        "line 8: order W-1 is also on line 2",
        "line 9: ordered_at '2025-03-03' has no time of day",
        "line 10: 7 fields expected",
        "line 11: order id 'W 9' must be 1-64 letters, digits or ._:/-",
    ]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT order_id, ordered_at, unit, patient_key FROM orders"
                              " ORDER BY order_id").fetchall()
    # Local times are Stockholm's; the patient is stored as its pseudonym only.
    assert [(r[0], r[1], r[2]) for r in stored] == [
        ("W-1", _local("2025-03-03 09:00"), "Hemtjänst Falun"),
        ("W-2", datetime(2025, 3, 3, 8, tzinfo=UTC), None)]
    assert all(r[3] not in ("p-1", "p-2") and len(r[3]) == 64 for r in stored)
    again = _import(database_url, GOOD)
    assert again["counts"] == {"rows": 2, "imported": 0, "unchanged": 2, "refused": 0}
    changed = _import(database_url, GOOD.replace("2025-03-03 09:00", "2025-03-04 09:00"))
    assert changed["refused"] == [{"line": 2, "order_id": "W-1", "reason":
                                   "line 2: order W-1 is already imported with another"
                                   " ordered_at"}]
    # A technician's file may only hold its own principal's orders.
    foreign = _import(database_url, HEADER + "W-20,20,,p-1,bpm,,2025-03-03 09:00\n", "2080")
    assert foreign["refused"] == [{"line": 2, "order_id": "W-20", "reason":
                                   "line 2: a technician of principal 2080 may not import"
                                   " orders for principal 20"}]


def _assign(url: str, device: str, patient: str, order: str | None = None) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        return service.assign(conn, SECRET, device_id=device, patient=patient, basis="HSL",
                              actor="t", order=order)


def _fulfilled(url: str, order_id: str) -> tuple[object, ...] | None:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT device_id, fulfilled_at FROM orders WHERE order_id = %s",
                            (order_id,)).fetchone()


def test_an_assignment_delivers_the_patients_order(database_url: str, fleet: Fleet) -> None:
    _import(database_url, GOOD + "W-3,20,,p-1,bpm,,2025-03-05 09:00\n")
    made = _assign(database_url, fleet.unpaired, "p-1")
    # The oldest open order of the patient that the device fits.
    assert made["order_id"] == "W-1"
    assert _fulfilled(database_url, "W-1") == (fleet.unpaired, made["valid_from"])
    assert _fulfilled(database_url, "W-3") == (None, None)
    with psycopg.connect(database_url) as conn:
        history = service.history(conn, fleet.unpaired)
    assert history[-1]["detail"]["order"] == "W-1"


@pytest.mark.parametrize(("patient", "order", "error", "message"), [
    ("p-2", "W-2", ConflictError, "order W-2 wants article number ART-9; device .* is model"
                                  " bpm, article number unknown"),
    ("p-9", "W-1", ConflictError, "order W-1 is for another patient"),
    ("p-1", "W-404", NotFoundError, "order W-404 of principal 20 does not exist"),
    ("p-1", "W-LATE", ConflictError, "order W-LATE was placed at .*, after this assignment"),
])
def test_an_assignment_naming_an_order_it_does_not_deliver_is_refused(
        database_url: str, fleet: Fleet, patient: str, order: str,
        error: type[Exception], message: str) -> None:
    late = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _import(database_url, GOOD + f"W-LATE,20,,p-1,bpm,,{late}\n")
    with pytest.raises(error, match=message):
        _assign(database_url, fleet.unpaired, patient, order)
    with psycopg.connect(database_url) as conn:
        assert service.get_device(conn, fleet.unpaired)["state"] == "in_stock"


def test_an_order_imported_after_its_delivery_is_matched(database_url: str,
                                                         fleet: Fleet) -> None:
    made = _assign(database_url, fleet.unpaired, "p-1")
    assert "order_id" not in made
    ordered = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    result = _import(database_url, HEADER + f"W-1,20,,p-1,bpm,,{ordered}\n"
                     + f"W-2,20,,p-1,scale,,{ordered}\n")
    assert result["imported"] == [
        {"order_id": "W-1", "principal": "20", "delivered_by": fleet.unpaired},
        {"order_id": "W-2", "principal": "20", "delivered_by": None}]
    with (pytest.raises(ConflictError, match="order W-1 was already delivered by device"),
          psycopg.connect(database_url) as conn):
            orders.fulfil_on_assign(conn, assignment={"device_id": fleet.cuff,
                                                      "patient_key": "x", "id": 1,
                                                      "valid_from": datetime.now(UTC)},
                                    principal="20", actor="t", order_id="W-1")


def _delivered(conn: psycopg.Connection[object], order_id: str, ordered: str,
               delivered: str | None, principal: str = "20") -> None:
    """An order placed and delivered at the given Stockholm times (no device needed for the
    report, which reads the orders alone: the assignment is a stand-in)."""
    conn.execute("INSERT INTO orders (principal_code, order_id, patient_key, model,"
                 " ordered_at, imported_by) VALUES (%s, %s, 'k', 'bpm', %s, 't')",
                 (principal, order_id, _local(ordered)))
    if delivered is None:
        return
    device = service.onboard_device(conn, principal=principal, model="bpm",
                                    serial=f"S-{order_id}", actor="t")["device_id"]
    made = service.assign(conn, SECRET, device_id=device, patient="r", basis="HSL", actor="t")
    conn.execute("UPDATE orders SET device_id = %s, assignment_id = %s, fulfilled_at = %s,"
                 " fulfilled_by = 't' WHERE order_id = %s",
                 (device, made["assignment_id"], _local(delivered), order_id))


def test_the_lead_time_report_per_principal_and_month(database_url: str, fleet: Fleet,
                                                      tmp_path: Path) -> None:
    with psycopg.connect(database_url) as conn:
        # Lead times 0, 1, 3, 7, 8 and 12 working days, all delivered in March 2025.
        for order_id, delivered in (("M0", "2025-03-03 15:00"), ("M1", "2025-03-04 10:00"),
                                    ("M3", "2025-03-06 10:00"), ("M7", "2025-03-12 10:00"),
                                    ("M8", "2025-03-13 10:00"), ("M12", "2025-03-19 10:00")):
            _delivered(conn, order_id, "2025-03-03 09:00", delivered)
        _delivered(conn, "OPEN", "2025-03-20 09:00", None)
        _delivered(conn, "APR", "2025-03-28 09:00", "2025-04-02 09:00")
        _delivered(conn, "F1", "2025-03-10 09:00", "2025-03-11 09:00", principal="2080")
        rows = lead_times.lead_times(conn, now=datetime(2025, 5, 15, tzinfo=UTC))
        one = lead_times.lead_times(conn, principal="20", month=date(2025, 4, 1),
                                    now=datetime(2025, 5, 15, tzinfo=UTC))
    march = {"month": "2025-03", "principal": "20", "ordered": 8, "delivered": 6,
             "median_days": Decimal(5), "p90_days": 12, "within_7_share": Decimal("0.667"),
             "open": 2}
    april = {"month": "2025-04", "principal": "20", "ordered": 0, "delivered": 1,
             "median_days": Decimal(3), "p90_days": 3, "within_7_share": Decimal("1.000"),
             "open": 1}
    may = {"month": "2025-05", "principal": "20", "ordered": 0, "delivered": 0,
           "median_days": None, "p90_days": None, "within_7_share": None, "open": 1}
    falun = {"month": "2025-03", "principal": "2080", "ordered": 1, "delivered": 1,
             "median_days": Decimal(1), "p90_days": 1, "within_7_share": Decimal("1.000"),
             "open": 0}
    assert rows == [march, falun, april, may]
    assert one == [april]
    assert lead_times.to_csv([march]).splitlines() == [
        "month,principal,ordered,delivered,median_days,p90_days,within_7_share,open",
        "2025-03,20,8,6,5,12,0.667,2"]


def test_the_command_line_and_the_api(database_url: str, fleet: Fleet, tmp_path: Path) -> None:
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(tmp_path),
           "AIDLINK_SECRET": "s" * 40}
    file = tmp_path / "orders.csv"
    file.write_text(GOOD + "W-3,20,,,bpm,,2025-03-03 09:00\n")
    result = CliRunner().invoke(main, ["order", "import", str(file)], env=env)
    assert result.exit_code == 1
    assert "aidlink: refused: line 4: patient is empty" in result.output
    assigned = CliRunner().invoke(main, ["device", "assign", fleet.unpaired, "--patient", "p-1",
                                         "--basis", "HSL", "--order", "W-1"], env=env)
    assert assigned.exit_code == 0, assigned.output
    assert json.loads(assigned.output)["order_id"] == "W-1"
    report = CliRunner().invoke(main, ["report", "lead-times", "--principal", "20", "--month",
                                       "2025-03", "--csv"], env=env)
    assert report.exit_code == 0, report.output
    assert report.output.splitlines() == [
        "month,principal,ordered,delivered,median_days,p90_days,within_7_share,open",
        "2025-03,20,2,0,,,,2"]
    bad = CliRunner().invoke(main, ["report", "lead-times", "--month", "March"], env=env)
    assert bad.exit_code == 2
    assert "--month: month 'March' is not YYYY-MM" in bad.output
    with api_client(database_url) as client:
        tech = bearer("20", Role.TECHNICIAN)
        imported = client.post("/v1/orders/import", headers={**tech, "Content-Type": "text/csv"},
                               content=HEADER + "W-9,20,,p-9,bpm,,2025-04-01 10:00\n")
        assert imported.status_code == 200, imported.text
        assert imported.json()["counts"]["imported"] == 1
        got = client.get("/v1/reports/lead-times", params={"month": "2025-04"}, headers=tech)
        assert got.status_code == 200, got.text
        assert [(r["principal"], r["ordered"], r["open"]) for r in got.json()["items"]] == [
            ("20", 1, 3)]
        csv_text = client.get("/v1/reports/lead-times",
                              params={"month": "2025-04", "format": "csv"}, headers=tech).text
        assert csv_text.splitlines()[1] == "2025-04,20,1,0,,,,3"


def test_orders_are_listed_open_or_delivered_without_the_patient(
        database_url: str, fleet: Fleet, tmp_path: Path) -> None:
    _import(database_url, GOOD + "W-3,20,,p-1,bpm,,2025-03-05 09:00\n")
    made = _assign(database_url, fleet.unpaired, "p-1")
    with psycopg.connect(database_url) as conn:
        open_ = lead_times.list_orders(conn, principal="20", state="open")
        delivered = lead_times.list_orders(conn, principal=None, state="delivered")
        with pytest.raises(InvalidInputError, match="order state 'late' is not one of"):
            lead_times.list_orders(conn, principal=None, state="late")
    assert [o["order_id"] for o in open_] == ["W-2", "W-3"]
    assert [(o["order_id"], o["device_id"]) for o in delivered] == [("W-1", fleet.unpaired)]
    assigned_at = made["valid_from"]
    assert isinstance(assigned_at, datetime)
    assert delivered[0]["lead_time_days"] == lead_time(
        datetime.fromisoformat(delivered[0]["ordered_at"]), assigned_at)
    assert all("patient" not in key for row in open_ + delivered for key in row)
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(tmp_path),
           "AIDLINK_SECRET": "s" * 40}
    listed = CliRunner().invoke(main, ["order", "list", "--state", "open"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["order_id"] for line in listed.output.splitlines()] == [
        "W-2", "W-3"]
    with api_client(database_url) as client:
        own = client.get("/v1/orders", params={"state": "delivered"},
                         headers=bearer("20", Role.TECHNICIAN))
        bad = client.get("/v1/orders", params={"state": "late"},
                         headers=bearer("20", Role.TECHNICIAN))
    assert own.status_code == 200, own.text
    assert [o["order_id"] for o in own.json()["items"]] == ["W-1"]
    assert bad.status_code == 422
