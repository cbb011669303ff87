"""The fleet and cost reports over a small fleet, as rows and as CSV, with exact figures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from gateway import db
from provisioning import licences, lifecycle, reports, service
from provisioning.errors import InvalidInputError
from tests.support import SECRET

Conn = psycopg.Connection[Any]
BPM, SCALE = "717171", "727272"
TODAY = date(2024, 3, 25)
NOW = datetime(2024, 3, 25, 12, 0, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A UTC time."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@dataclass(frozen=True)
class Fleet:
    """Devices d1..d7 and the licences l1, l2, l3, l5, l7 of the devices of the same number."""

    conn: Conn
    d: dict[int, str]
    lic: dict[int, int]


def device(conn: Conn, number: int, principal: str, article: str | None,
           assigned: datetime | None) -> str:
    """Onboard device ``number`` (individual number I{number}); assign it at a backdated time."""
    device_id = service.onboard_device(conn, principal=principal, model="m",
                                       serial=str(number), actor="t")["device_id"]
    assert isinstance(device_id, str)
    if article is not None:
        licences.set_traceability(conn, device_id=device_id, article_number=article,
                                  individual_number=f"I{number}", actor="t")
    if assigned is not None:
        service.assign(conn, SECRET, device_id=device_id, patient=f"p{number}", basis="HSL",
                       actor="t")
        conn.execute("UPDATE assignments SET valid_from = %s WHERE device_id = %s",
                     (assigned, device_id))
    return device_id


def licence(conn: Conn, device_id: str, terms: str, start: date, unit: str | None,
            end: date | None = None) -> int:
    """Start a licence; its id."""
    row = licences.start_licence(conn, device_id=device_id, terms=terms, start_date=start,
                                 end_date=end, unit=unit, actor="t")
    licence_id = row["id"]
    assert isinstance(licence_id, int)
    return licence_id


def observation(conn: Conn, device_id: str, principal: str, at: datetime) -> None:
    """A stored pulse reading received at ``at``."""
    if not db.uses_timescaledb(conn):
        conn.execute("SELECT aidlink_ensure_observation_partition(%s)", (at,))
    conn.execute("INSERT INTO observations (ts, device_id, code, principal_code, value, unit,"
                 " channel, received_at) VALUES (%s, %s, '8867-4', %s, 72, '/min', 'ble/2a35',"
                 " %s)", (at, device_id, principal, at))


def event(conn: Conn, device_id: str, principal: str, at: datetime) -> None:
    """A stored alarm event received at ``at``."""
    conn.execute("INSERT INTO events (occurred_at, device_id, principal_code, type, channel,"
                 " device_time, received_at) VALUES (%s, %s, %s, 'alarm.button', 'scaip', true,"
                 " %s)", (at, device_id, principal, at))


@pytest.fixture
def fleet(database_url: str) -> Iterator[Fleet]:
    """Seven devices of principals 20 and 2080 with licences on three kinds of terms."""
    db.migrate(database_url)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "20", "Region Dalarna")
        service.add_principal(conn, "2080", "Falun")
        licences.add_vendor(conn, code="acme", name="Acme Medical AB")
        for article, klass in ((BPM, "blood_pressure_monitor"), (SCALE, "scale")):
            licences.add_product(conn, article_number=article, name=klass, vendor="acme",
                                 product_class=klass)
        licences.add_terms(conn, code="BPM-M", article_number=BPM, period="monthly",
                           price=Decimal("300.00"), device_included=True, acquisition="rent")
        licences.add_terms(conn, code="SC-Y", article_number=SCALE, period="yearly",
                           price=Decimal("1200.00"), device_included=False, acquisition="rent",
                           device_price=Decimal("240.00"))
        licences.add_terms(conn, code="BPM-B", article_number=BPM, period="monthly",
                           price=Decimal("99.00"), device_included=False, acquisition="buy",
                           device_price=Decimal("1495.00"))
        d = {
            1: device(conn, 1, "20", BPM, utc(2024, 3, 5, 10)),
            2: device(conn, 2, "20", SCALE, utc(2024, 3, 1, 8)),
            3: device(conn, 3, "2080", BPM, None),
            # 23:30 UTC on 31 March is 01:30 on 1 April in Stockholm (summer time began).
            4: device(conn, 4, "2080", BPM, utc(2024, 3, 31, 23, 30)),
            5: device(conn, 5, "20", BPM, utc(2024, 1, 10, 9)),
            6: device(conn, 6, "20", None, utc(2024, 3, 10, 9)),
            7: device(conn, 7, "20", BPM, utc(2024, 3, 15, 9)),
        }
        lifecycle.return_device(conn, device_id=d[7], actor="t", reason="not needed")
        lic = {
            1: licence(conn, d[1], "BPM-M", date(2024, 3, 16), "HT-A"),
            2: licence(conn, d[2], "SC-Y", date(2024, 1, 1), None, date(2024, 3, 31)),
            3: licence(conn, d[3], "BPM-B", date(2024, 3, 20), "Omsorg", date(2024, 4, 10)),
            5: licence(conn, d[5], "BPM-M", date(2024, 1, 1), "HT-A"),
            7: licence(conn, d[7], "BPM-M", date(2024, 3, 1), "HT-B"),
        }
        observation(conn, d[1], "20", utc(2024, 2, 1, 8))
        event(conn, d[1], "20", utc(2024, 3, 20, 8))
        observation(conn, d[5], "20", utc(2024, 2, 10, 8))
        yield Fleet(conn, d, lic)


def costs(month: str, principal: str, unit: str | None, count: int, subscription: str,
          device_sek: str) -> dict[str, Any]:
    """An expected row of the cost report."""
    return {"month": month, "principal": principal, "unit": unit, "licences": count,
            "subscription_sek": Decimal(subscription), "device_sek": Decimal(device_sek),
            "total_sek": Decimal(subscription) + Decimal(device_sek)}


def test_monthly_costs_in_march(fleet: Fleet) -> None:
    rows = reports.monthly_costs(fleet.conn, month=date(2024, 3, 12))
    # 20/none: the scale, 1200 / 12 + 240 / 12. 20/HT-A: 300 * 16 / 31 = 154.84 plus 300.
    # 20/HT-B: a whole month. 2080: 99 * 12 / 31 = 38.32 plus the bought device, 1495.
    assert rows == [
        costs("2024-03", "20", None, 1, "100.00", "20.00"),
        costs("2024-03", "20", "HT-A", 2, "454.84", "0.00"),
        costs("2024-03", "20", "HT-B", 1, "300.00", "0.00"),
        costs("2024-03", "2080", "Omsorg", 1, "38.32", "1495.00"),
    ]
    assert reports.to_csv("costs", rows) == (
        "month,principal,unit,licences,subscription_sek,device_sek,total_sek\r\n"
        "2024-03,20,,1,100.00,20.00,120.00\r\n"
        "2024-03,20,HT-A,2,454.84,0.00,454.84\r\n"
        "2024-03,20,HT-B,1,300.00,0.00,300.00\r\n"
        "2024-03,2080,Omsorg,1,38.32,1495.00,1533.32\r\n"
    )


def test_monthly_costs_in_april_for_one_principal(fleet: Fleet) -> None:
    # The scale's licence ended in March; the bought device was charged then. 99 * 10 / 30.
    assert reports.monthly_costs(fleet.conn, month=date(2024, 4, 1)) == [
        costs("2024-04", "20", "HT-A", 2, "600.00", "0.00"),
        costs("2024-04", "20", "HT-B", 1, "300.00", "0.00"),
        costs("2024-04", "2080", "Omsorg", 1, "33.00", "0.00"),
    ]
    assert reports.monthly_costs(fleet.conn, month=date(2024, 4, 1), principal="2080") == [
        costs("2024-04", "2080", "Omsorg", 1, "33.00", "0.00")]


def test_expiring_licences(fleet: Fleet) -> None:
    scale = {"licence_id": fleet.lic[2], "end_date": "2024-03-31", "days_left": 6,
             "device_id": fleet.d[2], "article_number": SCALE, "individual_number": "I2",
             "terms": "SC-Y", "principal": "20", "unit": None}
    bought = {"licence_id": fleet.lic[3], "end_date": "2024-04-10", "days_left": 16,
              "device_id": fleet.d[3], "article_number": BPM, "individual_number": "I3",
              "terms": "BPM-B", "principal": "2080", "unit": "Omsorg"}
    assert reports.expiring_licences(fleet.conn, within_days=7, today=TODAY) == [scale]
    assert reports.expiring_licences(fleet.conn, within_days=30, today=TODAY) == [scale, bought]
    assert reports.expiring_licences(fleet.conn, within_days=30, today=TODAY,
                                     principal="2080") == [bought]
    assert reports.to_csv("expiring", [scale]) == (
        "licence_id,end_date,days_left,device_id,article_number,individual_number,terms,"
        f"principal,unit\r\n{fleet.lic[2]},2024-03-31,6,{fleet.d[2]},{SCALE},I2,SC-Y,20,\r\n")
    assert reports.expiring_licences(fleet.conn, within_days=0, today=TODAY) == []


def unlicensed(fleet: Fleet, number: int, principal: str, article: str | None,
               since: str) -> dict[str, Any]:
    """An expected row of the unlicensed report for device ``number``."""
    return {"device_id": fleet.d[number], "principal": principal, "model": "m",
            "serial": str(number), "article_number": article,
            "individual_number": None if article is None else f"I{number}",
            "assigned_since": since}


def test_assigned_devices_without_a_licence(fleet: Fleet) -> None:
    no_article = unlicensed(fleet, 6, "20", None, "2024-03-10T09:00:00+00:00")
    falun = unlicensed(fleet, 4, "2080", BPM, "2024-03-31T23:30:00+00:00")
    assert reports.unlicensed_devices(fleet.conn, today=TODAY) == [no_article, falun]
    # After its licence ended, the scale is unlicensed too.
    scale = unlicensed(fleet, 2, "20", SCALE, "2024-03-01T08:00:00+00:00")
    assert reports.unlicensed_devices(fleet.conn, today=date(2024, 4, 1), principal="20") == \
        sorted([no_article, scale], key=lambda row: str(row["device_id"]))
    assert reports.to_csv("unlicensed", [falun]) == (
        "device_id,principal,model,serial,article_number,individual_number,assigned_since\r\n"
        f"{fleet.d[4]},2080,m,4,{BPM},I4,2024-03-31T23:30:00+00:00\r\n")


def test_licences_on_devices_not_in_use(fleet: Fleet) -> None:
    # d1 read on 20 March (an event), d2 was assigned on 1 March: neither is idle for 30 days.
    rows = reports.idle_licences(fleet.conn, idle_days=30, now=NOW)
    idle = {"licence_id": fleet.lic[5], "device_id": fleet.d[5], "state": "assigned",
            "reason": "idle", "last_reading_at": "2024-02-10T08:00:00+00:00", "terms": "BPM-M",
            "principal": "20", "unit": "HT-A"}
    returned = {"licence_id": fleet.lic[7], "device_id": fleet.d[7], "state": "returned",
                "reason": "returned", "last_reading_at": None, "terms": "BPM-M",
                "principal": "20", "unit": "HT-B"}
    in_stock = {"licence_id": fleet.lic[3], "device_id": fleet.d[3], "state": "in_stock",
                "reason": "in_stock", "last_reading_at": None, "terms": "BPM-B",
                "principal": "2080", "unit": "Omsorg"}
    assert rows == [idle, returned, in_stock]
    assert reports.to_csv("idle", [idle]) == (
        "licence_id,device_id,state,reason,last_reading_at,terms,principal,unit\r\n"
        f"{fleet.lic[5]},{fleet.d[5]},assigned,idle,2024-02-10T08:00:00+00:00,BPM-M,20,HT-A\r\n")
    # With a 60-day window only the devices not with a patient remain.
    assert reports.idle_licences(fleet.conn, idle_days=60, now=NOW, principal="2080") == [
        in_stock]
    assert [row["device_id"] for row in reports.idle_licences(fleet.conn, idle_days=60,
                                                              now=NOW)] == \
        [fleet.d[7], fleet.d[3]]


def test_deliveries_per_product_class_principal_and_month(fleet: Fleet) -> None:
    rows = reports.deliveries(fleet.conn, since=date(2024, 1, 1), until=date(2024, 5, 1))
    assert rows == [
        {"month": "2024-01", "principal": "20", "product_class": "blood_pressure_monitor",
         "delivered": 1},
        {"month": "2024-03", "principal": "20", "product_class": "blood_pressure_monitor",
         "delivered": 2},
        {"month": "2024-03", "principal": "20", "product_class": "scale", "delivered": 1},
        {"month": "2024-03", "principal": "20", "product_class": None, "delivered": 1},
        {"month": "2024-04", "principal": "2080", "product_class": "blood_pressure_monitor",
         "delivered": 1},
    ]
    # The Falun delivery is on 1 April local time, so March alone does not hold it.
    assert reports.deliveries(fleet.conn, since=date(2024, 3, 1), until=date(2024, 4, 1),
                              principal="2080") == []
    assert reports.to_csv("deliveries", rows[2:4]) == (
        "month,principal,product_class,delivered\r\n2024-03,20,scale,1\r\n2024-03,20,,1\r\n")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: reports.expiring_licences(c, within_days=-1),
         "within days must not be negative, not -1"),
        (lambda c: reports.idle_licences(c, idle_days=0), "idle days must be at least 1, not 0"),
        (lambda c: reports.deliveries(c, since=date(2024, 3, 1), until=date(2024, 3, 1)),
         "until 2024-03-01 must be after since 2024-03-01"),
        (lambda c: reports.to_csv("nope", []),
         "report 'nope' is not one of costs, expiring, unlicensed, idle, deliveries, overdue,"
         " devices"),
    ],
    ids=["expiring", "idle", "deliveries", "csv"],
)
def test_report_arguments_are_checked(fleet: Fleet, call: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{re.escape(message)}$"):
        call(fleet.conn)


def test_empty_reports_still_have_a_header(fleet: Fleet) -> None:
    rows = reports.monthly_costs(fleet.conn, month=date(2023, 1, 1))
    assert rows == []
    assert reports.to_csv("costs", rows) == (
        "month,principal,unit,licences,subscription_sek,device_sek,total_sek\r\n")
