"""Swedish working days, and delivery lead times counted in them.

A working day is a Monday to Friday that is neither a public holiday ("allmän helgdag", Act
1989:253) nor one of the three eves Swedish employers treat as holidays: midsummer eve, Christmas
eve and New Year's eve. The annual leave act puts those three on a par with Sundays and public
holidays (Semesterlag SFS 1977:480, 7 §: "Med söndag jämställs allmän helgdag samt
midsommarafton, julafton och nyårsafton"), and the devices centre is closed on them, so a
delivery cannot be expected then. The ``holidays`` package keeps the calendar (Easter and its
movable feasts, midsummer, All Saints' Day) and lists the eves in its DE_FACTO category. It
lists Sundays only when asked (``include_sundays``); weekends are left out by weekday here, so
the count is right either way.

Lead time: the working days from the order to the delivery, both taken as local dates in
Europe/Stockholm (the time of day does not count: the ordering portal is open round the
clock and principals share no cut-off time). The order's day itself does not count; an order
placed on a day that is not a working day (a weekend, a holiday, an eve) counts as placed on
the next working day. Every working day after that, up to and including the delivery's day,
is one day of lead time. So an order on Monday delivered on Tuesday took 1 working day, one
delivered the same day 0, and one placed on Saturday and delivered on Monday 0.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
from holidays.constants import DE_FACTO, PUBLIC

from provisioning.errors import InvalidInputError

ZONE = ZoneInfo("Europe/Stockholm")
# The target the devices centre reports against: "90 % within seven working days".
TARGET_DAYS = 7


@lru_cache(maxsize=64)
def _closed_days(year: int) -> frozenset[date]:
    """Public holidays and the three de facto holidays of one year."""
    calendar = holidays.country_holidays("SE", years=year, categories=(PUBLIC, DE_FACTO))
    return frozenset(calendar.keys())


def is_working_day(day: date) -> bool:
    """Whether ``day`` is a Swedish working day (Monday-Friday, no holiday or eve)."""
    return day.weekday() < 5 and day not in _closed_days(day.year)


def local_date(moment: datetime) -> date:
    """The Stockholm calendar date of an aware moment; InvalidInputError for a naive one."""
    if moment.tzinfo is None:
        raise InvalidInputError(f"time {moment.isoformat()} has no time zone")
    return moment.astimezone(ZONE).date()


def first_working_day(day: date) -> date:
    """``day`` if it is a working day, else the next working day."""
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def working_days_between(start: date, end: date) -> int:
    """Working days after ``start`` up to and including ``end`` (0 if end is not later)."""
    days = 0
    day = start + timedelta(days=1)
    while day <= end:
        days += is_working_day(day)
        day += timedelta(days=1)
    return days


def lead_time(ordered_at: datetime, delivered_at: datetime) -> int:
    """Working days from an order to its delivery, as the module docstring defines them."""
    start = first_working_day(local_date(ordered_at))
    return working_days_between(start, local_date(delivered_at))
