"""Products, licence terms, licences, their cost arithmetic and Sesam CSV traceability."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from gateway import db
from provisioning import licences, lifecycle, reports, service
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from provisioning.licences import Terms
from provisioning.reports import Charge, monthly_charge

Conn = psycopg.Connection[Any]
BPM = "717171"
SCALE = "727272"


def exactly(message: str) -> str:
    """A pytest.raises pattern matching the whole message."""
    return f"^{re.escape(message)}$"


def terms(period: str = "monthly", price: str = "300.00", device_price: str | None = None,
          acquisition: str = "rent") -> Terms:
    """Terms for the cost arithmetic; the device is included unless it has a price."""
    return Terms("T", BPM, period, Decimal(price), device_price is None, acquisition,
                 None if device_price is None else Decimal(device_price))


def sek(subscription: str, device: str = "0.00") -> Charge:
    """A charge from two amounts in SEK."""
    return Charge(Decimal(subscription), Decimal(device))


# --- cost arithmetic (hand-computed; see provisioning.reports for the rule) ------------------


@pytest.mark.parametrize(
    ("chosen", "start", "end", "month", "expected"),
    [
        # a whole month of a monthly licence: the monthly price
        (terms(), date(2024, 1, 1), None, date(2024, 3, 1), sek("300.00")),
        # from 16 March: 16 of 31 days, 300 * 16 / 31 = 154.838... -> 154.84
        (terms(), date(2024, 3, 16), None, date(2024, 3, 1), sek("154.84")),
        # ending 10 March: 300 * 10 / 31 = 96.774... -> 96.77
        (terms(), date(2024, 1, 1), date(2024, 3, 10), date(2024, 3, 31), sek("96.77")),
        # one day of 30: 10.05 * 15 / 30 = 5.025, half-up -> 5.03
        (terms(price="10.05"), date(2024, 4, 16), None, date(2024, 4, 1), sek("5.03")),
        # a single day, start = end: 300 / 31 = 9.677... -> 9.68
        (terms(), date(2024, 3, 5), date(2024, 3, 5), date(2024, 3, 1), sek("9.68")),
        # yearly spread per month: 1200 / 12 = 100.00
        (terms("yearly", "1200.00"), date(2023, 6, 1), None, date(2024, 3, 1), sek("100.00")),
        # 1000 / 12 = 83.333... -> 83.33 every whole month
        (terms("yearly", "1000.00"), date(2023, 6, 1), None, date(2024, 3, 1), sek("83.33")),
        # yearly from 10 February in a leap year: 1200 * 20 / (29 * 12) = 68.965... -> 68.97
        (terms("yearly", "1200.00"), date(2024, 2, 10), None, date(2024, 2, 1), sek("68.97")),
        # rented device on top, from 16 March: 250 * 16 / 31 = 129.03, 50 * 16 / 31 = 25.81
        (terms(price="250.00", device_price="50.00"), date(2024, 3, 16), None,
         date(2024, 3, 1), sek("129.03", "25.81")),
        # yearly rent on top, April: 600 / 12 = 50.00, 1200 / 12 = 100.00
        (terms("yearly", "600.00", "1200.00"), date(2024, 1, 1), None, date(2024, 4, 1),
         sek("50.00", "100.00")),
        # bought device: the whole price in the start month; 99 * 12 / 31 = 38.32
        (terms(price="99.00", device_price="1495.00", acquisition="buy"), date(2024, 3, 20),
         None, date(2024, 3, 1), sek("38.32", "1495.00")),
        # ... and nothing for it the month after
        (terms(price="99.00", device_price="1495.00", acquisition="buy"), date(2024, 3, 20),
         None, date(2024, 4, 1), sek("99.00")),
        # included device, even when bought: nothing on top
        (terms(acquisition="buy"), date(2024, 3, 1), None, date(2024, 3, 1), sek("300.00")),
        # before the start and after the end: nothing
        (terms(), date(2024, 4, 1), None, date(2024, 3, 1), sek("0.00")),
        (terms(), date(2024, 1, 1), date(2024, 2, 29), date(2024, 3, 1), sek("0.00")),
    ],
    ids=["whole-month", "from-16th", "until-10th", "half-up", "one-day", "yearly",
         "yearly-thirds", "yearly-leap-february", "rent-on-top", "yearly-rent", "buy-start-month",
         "buy-later-month", "included-buy", "before-start", "after-end"],
)
def test_monthly_charge(chosen: Terms, start: date, end: date | None, month: date,
                        expected: Charge) -> None:
    assert monthly_charge(chosen, start=start, end=end, month=month) == expected


def test_charge_total_adds_both_parts() -> None:
    assert sek("129.03", "25.81").total == Decimal("154.84")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"period": "weekly"}, "terms T: period 'weekly' is not one of monthly, yearly"),
        ({"acquisition": "lease"}, "terms T: acquisition 'lease' is not one of rent, buy"),
        ({"price": Decimal("-1.00")}, "terms T: price -1.00 must be a non-negative amount in"
                                      " whole öre"),
        ({"price": Decimal("1.005")}, "terms T: price 1.005 must be a non-negative amount in"
                                      " whole öre"),
        ({"device_included": False}, "terms T: a device price is required exactly when the"
                                     " device is not included"),
        ({"device_price": Decimal("5.00")}, "terms T: a device price is required exactly when"
                                            " the device is not included"),
        ({"code": "bad code"}, "terms code 'bad code' is not valid (pattern"
                               " ^[A-Za-z0-9_-]{1,32}$)"),
    ],
)
def test_terms_refuse_bad_values_naming_them(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"code": "T", "article_number": BPM, "period": "monthly",
                              "price": Decimal("1.00"), "device_included": True,
                              "acquisition": "rent", "device_price": None, **fields}
    with pytest.raises(InvalidInputError, match=exactly(message)):
        Terms(**values)


# --- the catalogue and licences in the database ----------------------------------------------


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    """A migrated database: principals 20 and 2080, a vendor, two products, two terms."""
    db.migrate(database_url)
    with psycopg.connect(database_url) as connection:
        service.add_principal(connection, "20", "Region Dalarna", "password")
        service.add_principal(connection, "2080", "Falun")
        licences.add_vendor(connection, code="acme", name="Acme Medical AB")
        licences.add_product(connection, article_number=BPM, name="Acme BPM 2",
                             product_class="blood_pressure_monitor", vendor="acme")
        licences.add_product(connection, article_number=SCALE, name="Acme Scale",
                             product_class="scale", vendor="acme")
        licences.add_terms(connection, code="BPM-M", article_number=BPM, period="monthly",
                           price=Decimal("300.00"), device_included=True, acquisition="rent")
        yield connection


def onboard(conn: Conn, serial: str, principal: str = "20",
            article: str | None = BPM) -> str:
    """A device in stock, with Sesam numbers unless article is None; its id."""
    device_id = service.onboard_device(conn, principal=principal, model="bpm", serial=serial,
                                       actor="tech-1")["device_id"]
    assert isinstance(device_id, str)
    if article is not None:
        licences.set_traceability(conn, device_id=device_id, article_number=article,
                                  individual_number=f"I{serial}", actor="tech-1")
    return device_id


def test_catalogue_rows_come_back_as_stored(conn: Conn) -> None:
    assert licences.add_vendor(conn, code="beta", name=" Beta Care ") == {
        "code": "beta", "name": "Beta Care"}
    assert licences.add_product(conn, article_number="9001", name="Beta Scale",
                                product_class="scale", vendor="beta") == {
        "article_number": "9001", "name": "Beta Scale", "product_class": "scale",
        "vendor": "beta"}
    assert licences.add_terms(conn, code="S-Y", article_number="9001", period="yearly",
                              price=Decimal("1200.00"), device_included=False,
                              acquisition="buy", device_price=Decimal("995.00")) == {
        "code": "S-Y", "article_number": "9001", "period": "yearly",
        "price": Decimal("1200.00"), "device_included": False, "acquisition": "buy",
        "device_price": Decimal("995.00")}
    assert licences.get_terms(conn, "S-Y") == Terms("S-Y", "9001", "yearly", Decimal("1200.00"),
                                                    False, "buy", Decimal("995.00"))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: licences.add_vendor(c, code="acme", name="Again"), ConflictError,
         "vendor acme already exists"),
        (lambda c: licences.add_product(c, article_number=BPM, name="x", product_class="scale",
                                        vendor="acme"), ConflictError,
         f"product with article number {BPM} already exists"),
        (lambda c: licences.add_product(c, article_number="1", name="x", product_class="scale",
                                        vendor="nobody"), NotFoundError,
         "vendor nobody does not exist"),
        (lambda c: licences.add_product(c, article_number="1", name="x",
                                        product_class="Scale!", vendor="acme"),
         InvalidInputError, "product class 'Scale!' is not valid (pattern ^[a-z][a-z0-9_]{0,39}$)"),
        (lambda c: licences.add_terms(c, code="BPM-M", article_number=BPM, period="monthly",
                                      price=Decimal(1), device_included=True,
                                      acquisition="rent"), ConflictError,
         "licence terms BPM-M already exist"),
        (lambda c: licences.add_terms(c, code="X", article_number="404", period="monthly",
                                      price=Decimal(1), device_included=True,
                                      acquisition="rent"), NotFoundError,
         "product with article number 404 does not exist"),
        (lambda c: licences.get_terms(c, "NOPE"), NotFoundError,
         "licence terms NOPE do not exist"),
    ],
    ids=["vendor-twice", "product-twice", "unknown-vendor", "bad-class", "terms-twice",
         "terms-unknown-product", "unknown-terms"],
)
def test_catalogue_refusals(conn: Conn, call: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=exactly(message)):
        call(conn)


def test_start_and_end_a_licence_recorded_in_the_history(conn: Conn) -> None:
    device = onboard(conn, "1")
    started = licences.start_licence(conn, device_id=device, terms="BPM-M", unit="HT-Falun",
                                     start_date=date(2024, 3, 16), actor="tech-2")
    licence = started["id"]
    assert started == {"id": licence, "terms": "BPM-M", "device_id": device, "principal": "20",
                       "unit": "HT-Falun", "start_date": "2024-03-16", "end_date": None}
    ended = licences.end_licence(conn, licence_id=licence, end_date=date(2024, 12, 31),
                                 actor="tech-3", reason="contract ends")
    assert ended == {**started, "end_date": "2024-12-31"}
    assert licences.list_licences(conn, device_id=device) == [ended]
    assert licences.list_licences(conn, principal="2080") == []
    assert [(row["action"], row["actor"], row["detail"])
            for row in service.history(conn, device)][-2:] == [
        ("licence_started", "tech-2", {"licence": licence, "terms": "BPM-M", "principal": "20",
                                       "unit": "HT-Falun", "start_date": "2024-03-16",
                                       "end_date": None, "reason": "licence started"}),
        ("licence_ended", "tech-3", {"licence": licence, "end_date": "2024-12-31",
                                     "reason": "contract ends"}),
    ]


def test_another_principal_can_pay(conn: Conn) -> None:
    device = onboard(conn, "1")
    row = licences.start_licence(conn, device_id=device, terms="BPM-M", principal="2080",
                                 start_date=date(2024, 1, 1), actor="t")
    assert row["principal"] == "2080"


@pytest.mark.parametrize(
    ("prepare", "fields", "error", "message"),
    [
        (None, {"start_date": date(2024, 5, 1), "end_date": date(2024, 4, 30)},
         InvalidInputError, "licence for device {d}: end date 2024-04-30 is before start date"
                            " 2024-05-01"),
        (None, {"terms": "NOPE"}, NotFoundError, "licence terms NOPE do not exist"),
        (None, {"principal": "2099"}, NotFoundError, "principal 2099 does not exist"),
        (None, {"unit": ""}, InvalidInputError,
         "licence for device {d}: unit must be 1 to 64 characters, not ''"),
        ("scale", {}, ConflictError,
         f"device {{d}} has article number {SCALE}; terms BPM-M license article {BPM} only"),
        ("retire", {}, ConflictError, "device {d} is retired; it cannot hold a licence"),
        ("licence", {"start_date": date(2024, 6, 1)}, ConflictError,
         "device {d} already holds licence {l} on terms BPM-M in that period"),
    ],
    ids=["end-before-start", "unknown-terms", "unknown-payer", "empty-unit", "other-article",
         "retired", "overlap"],
)
def test_licence_refusals(conn: Conn, prepare: str | None, fields: dict[str, Any],
                          error: type[Exception], message: str) -> None:
    device = onboard(conn, "1", article=SCALE if prepare == "scale" else BPM)
    other = None
    if prepare == "retire":
        lifecycle.retire(conn, device_id=device, actor="t", reason="r")
    if prepare == "licence":
        other = licences.start_licence(conn, device_id=device, terms="BPM-M",
                                       start_date=date(2024, 1, 1), actor="t")["id"]
    values: dict[str, Any] = {"device_id": device, "terms": "BPM-M",
                              "start_date": date(2024, 1, 1), "actor": "t", **fields}
    with pytest.raises(error, match=exactly(message.format(d=device, l=other))):
        licences.start_licence(conn, **values)
    assert len(licences.list_licences(conn, device_id=device)) == (prepare == "licence")


def test_end_licence_refusals(conn: Conn) -> None:
    device = onboard(conn, "1")
    licence = licences.start_licence(conn, device_id=device, terms="BPM-M",
                                     start_date=date(2024, 3, 1), actor="t")["id"]
    with pytest.raises(InvalidInputError, match=exactly(
            f"licence {licence}: end date 2024-02-29 is before its start date 2024-03-01")):
        licences.end_licence(conn, licence_id=licence, end_date=date(2024, 2, 29), actor="t",
                             reason="r")
    with pytest.raises(NotFoundError, match=exactly("licence 999 does not exist")):
        licences.end_licence(conn, licence_id=999, end_date=date(2024, 3, 1), actor="t",
                             reason="r")


# --- Sesam traceability ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("article", "individual", "error", "message"),
    [
        ("404", "1", NotFoundError, "device {d}: product with article number 404 does not exist"),
        (None, "1", InvalidInputError,
         "device {d}: an individual number needs an article number"),
        (BPM, "a b", InvalidInputError, "device {d}: individual number 'a b' is not valid"
                                        " (pattern ^[A-Za-z0-9._/-]{{1,32}}$)"),
        (BPM, "I0", ConflictError, f"device {{d}}: article {BPM} individual I0 is already device"
                                   " {other}"),
    ],
    ids=["unknown-product", "individual-alone", "bad-individual", "taken"],
)
def test_traceability_refusals(conn: Conn, article: str | None, individual: str,
                               error: type[Exception], message: str) -> None:
    other = onboard(conn, "0")
    device = onboard(conn, "1", article=None)
    with pytest.raises(error, match=exactly(message.format(d=device, other=other))):
        licences.set_traceability(conn, device_id=device, article_number=article,
                                  individual_number=individual, actor="t")


def test_csv_round_trip(conn: Conn) -> None:
    first, second = onboard(conn, "1"), onboard(conn, "2", principal="2080")
    bare = onboard(conn, "3", article=None)
    text = reports.devices_csv(conn)
    ids = sorted([(first, "20", "1"), (second, "2080", "2"), (bare, "20", "3")])
    sesam = {"1": f"{BPM},I1", "2": f"{BPM},I2", "3": ","}
    assert text == "device_id,principal,model,serial,state,article_number,individual_number\r\n" \
        + "".join(f"{d},{p},bpm,{s},in_stock,{sesam[s]}\r\n" for d, p, s in ids)
    for device in (first, second):
        licences.set_traceability(conn, device_id=device, article_number=None,
                                  individual_number=None, actor="t")
    assert licences.import_devices_csv(conn, text, actor="tech-9") == {"lines": 3, "changed": 2}
    assert reports.devices_csv(conn) == text
    line = 2 + [device for device, _, _ in ids].index(first)
    assert service.history(conn, first)[-1]["detail"] == {
        "article_number": BPM, "individual_number": "I1",
        "reason": f"Sesam CSV import, line {line}"}
    assert licences.import_devices_csv(conn, text, actor="tech-9") == {"lines": 3, "changed": 0}


def test_csv_import_can_swap_numbers_between_devices(conn: Conn) -> None:
    first, second = onboard(conn, "1"), onboard(conn, "2")
    text = (f"device_id,article_number,individual_number\n{first},{BPM},I2\n"
            f"{second},{BPM},I1\n")
    assert licences.import_devices_csv(conn, text, actor="t") == {"lines": 2, "changed": 2}
    assert conn.execute("SELECT id, individual_number FROM devices ORDER BY serial"
                        ).fetchall() == [(first, "I2"), (second, "I1")]


@pytest.mark.parametrize(
    ("lines", "error", "message"),
    [
        (["device_id,article_number,individual_number,colour"], InvalidInputError,
         "line 1, column colour: unknown column; the columns are device_id, principal, model,"
         " serial, state, article_number, individual_number"),
        (["device_id,article_number"], InvalidInputError,
         "line 1, column individual_number: the column is missing"),
        (["device_id,article_number,individual_number", "{a},,", "{b},404,9"], NotFoundError,
         "line 3, column article_number: product with article number 404 does not exist"),
        (["device_id,article_number,individual_number", "{a},,", "dev-x,,"], NotFoundError,
         "line 3, column device_id: device dev-x does not exist"),
        (["device_id,serial,article_number,individual_number", "{a},1,,", "{b},9,,"],
         ConflictError, "line 3, column serial: '9' does not match device {b}, whose serial"
                        " is '2'"),
        (["device_id,article_number,individual_number", "{a},,", "{b},,", "{a},,"],
         InvalidInputError, "line 4, column device_id: device {a} is also on line 2"),
        (["device_id,article_number,individual_number", "{a}," + BPM + ",7",
          "{b}," + BPM + ",7"], ConflictError,
         f"line 3, column individual_number: article {BPM} individual 7 is also on line 2"),
        (["device_id,article_number,individual_number", "{a},,", "{b},,,"],
         InvalidInputError, "line 3: 3 fields expected"),
        (["device_id,article_number,individual_number", "{a},,", "{b}," + BPM + ",I0"],
         ConflictError, f"line 3, column individual_number: article {BPM} individual I0 is"
                        " already device {c}"),
        (["device_id,article_number,individual_number", '"{a}",,', '"{b}",' + BPM + ',"x y"'],
         InvalidInputError, "line 3, column individual_number: individual number 'x y' is not"
                            " valid (pattern ^[A-Za-z0-9._/-]{{1,32}}$)"),
    ],
    ids=["unknown-column", "missing-column", "unknown-product", "unknown-device",
         "serial-mismatch", "device-twice", "numbers-twice", "extra-field", "numbers-taken",
         "bad-individual"],
)
def test_a_bad_csv_line_is_named_and_nothing_changes(
        conn: Conn, lines: list[str], error: type[Exception], message: str) -> None:
    a, b = onboard(conn, "1", article=None), onboard(conn, "2", article=None)
    c = onboard(conn, "0")
    before = reports.devices_csv(conn)
    text = "\r\n".join(lines).replace("{a}", a).replace("{b}", b) + "\r\n"
    with pytest.raises(error, match=exactly(message.format(a=a, b=b, c=c))):
        licences.import_devices_csv(conn, text, actor="t")
    assert reports.devices_csv(conn) == before
