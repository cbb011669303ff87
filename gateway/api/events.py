"""Events for clinicians' systems and alarm receivers: ``GET /v1/events`` (JSON, paged) and
``GET /v1/events/stream`` (server-sent events, replaying from an event id)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import anyio
import psycopg
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from adapters.model import dumps
from gateway.api import scoping
from gateway.api.deps import ApiState, EventsReader, ScopedConn, State
from gateway.api.event_queries import (
    MAX_PAGE,
    EventFilter,
    EventPage,
    EventQueryError,
    decode_cursor,
    device_known,
    fetch_after,
    fetch_page,
    parse_event_id,
    parse_type,
    recent_ids,
    snapshot_bounds,
)
from gateway.api.queries import log_access
from gateway.api.sse import (
    KEEPALIVE,
    StreamSettings,
    Watermark,
    event_block,
    retry_block,
    stream_settings,
    stream_slots,
)
from gateway.auth import Caller
from provisioning.errors import InvalidInputError
from provisioning.patients import patient_key

router = APIRouter()

MAX_RANGE = timedelta(days=366)
# Ids below the newest one re-checked when a stream starts without a replay id: a writer
# that took its id before the newest committed one may still commit it.
START_WINDOW = 1000

EndUser = Annotated[str | None, Header(alias="X-End-User", max_length=200)]
Purpose = Annotated[str, Header(alias="X-Purpose", max_length=100)]
TypeParam = Annotated[str | None, Query(alias="type", max_length=64,
                                         description="a type, or a prefix like alarm.*")]
PatientParam = Annotated[str | None, Query(max_length=64, description="the caller's reference")]


def _bad(exc: Exception) -> HTTPException:
    return HTTPException(400, str(exc))


def _filter(state: ApiState, who: Caller, patient: str | None, device: str | None,
            type_: str | None) -> EventFilter:
    key = None
    if patient is not None:
        try:
            key = patient_key(state.secret, who.principal, patient)
        except InvalidInputError as exc:
            raise HTTPException(400, f"patient: {exc}") from exc
    exact = prefix = None
    if type_ is not None:
        try:
            exact, prefix = parse_type(type_)
        except EventQueryError as exc:
            raise _bad(exc) from exc
    return EventFilter(principal=who.principal, patient_key=key, device_id=device,
                       type_exact=exact, type_prefix=prefix)


def _range(since: datetime | None, until: datetime | None) -> None:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise HTTPException(400, f"{name} must carry a zone offset (RFC 3339)")
    if since is None:
        return
    end = until if until is not None else datetime.now(UTC)
    if until is not None and until <= since:
        raise HTTPException(400, "until must be later than since")
    if end - since > MAX_RANGE:
        raise HTTPException(400, f"since..until spans more than the maximum of"
                            f" {MAX_RANGE.days} days (until defaults to now)")


def _item(row: dict[str, Any], patient: str | None) -> dict[str, Any]:
    return {
        "kind": "event",
        "id": str(row["id"]),
        "type": row["type"],
        "occurred_at": row["occurred_at"],
        "data": row["data"],
        "device_id": row["device_id"],
        # The caller's own reference when it asked by patient; otherwise the pseudonym.
        "patient": patient if patient is not None else row["patient_key"],
        "received_at": row["received_at"],
        "channel": row["channel"],
    }


@router.get("/v1/events")
def list_events(
    state: State,
    who: EventsReader,
    conn: ScopedConn,
    end_user: EndUser = None,
    purpose: Purpose = "care",
    patient: PatientParam = None,
    device: Annotated[str | None, Query(max_length=64)] = None,
    type_: TypeParam = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: Annotated[str | None, Query(max_length=20)] = None,
    limit: int = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The principal's events, newest first, keyset-paged on (occurred_at, id)."""
    if not 1 <= limit <= MAX_PAGE:
        raise HTTPException(400, f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    _range(since, until)
    selection = _filter(state, who, patient, device, type_)
    try:
        page = EventPage(since=since, until=until, limit=limit,
                         after_id=None if after_id is None else parse_event_id("after_id",
                                                                               after_id),
                         before=None if cursor is None else decode_cursor(cursor))
    except EventQueryError as exc:
        raise _bad(exc) from exc
    with conn.transaction():
        if device is not None and not device_known(conn, who.principal, device):
            raise HTTPException(404, f"device {device} not found")
        rows, next_cursor = fetch_page(conn, selection, page)
        keys = {r["patient_key"] for r in rows if r["patient_key"]}
        if selection.patient_key is not None:
            keys.add(selection.patient_key)
        log_access(conn, who, patient_keys=keys, action="events.read", purpose=purpose,
                   end_user=end_user, detail={"route": "/v1/events", "rows": len(rows)})
    body = dumps({"items": [_item(r, patient) for r in rows], "next_cursor": next_cursor})
    return Response(body, media_type="application/json")


Pool = ConnectionPool[psycopg.Connection[Any]]


class _Poller:
    """One stream's reads: each poll borrows a pooled connection for one short transaction
    under the caller's principal, reads, logs the read and gives the connection back."""

    def __init__(self, pool: Pool, who: Caller, selection: EventFilter, patient: str | None,
                 purpose: str, end_user: str | None, settings: StreamSettings) -> None:
        self.pool, self.who, self.selection, self.patient = pool, who, selection, patient
        self.purpose, self.end_user, self.settings = purpose, end_user, settings
        self.mark: Watermark | None = None

    def start(self, after_id: int | None) -> None:
        """Replay from ``after_id``, or begin with what is committed from now on."""
        if after_id is not None:
            self.mark = Watermark(floor=after_id)
            return
        with self.pool.connection() as conn, conn.transaction():
            scoping.enter(conn, self.who.principal, scoping.API_ROLE)
            highest, seen = recent_ids(conn, self.selection, START_WINDOW)
            _, xmax = snapshot_bounds(conn)
        self.mark = Watermark(floor=max(highest - START_WINDOW, 0), delivered=set(seen),
                              pending=[(xmax, highest, time.monotonic())])

    def poll(self) -> tuple[list[str], bool]:
        """The blocks of newly visible events, and whether more are waiting to be read."""
        mark = self.mark
        assert mark is not None, "start() runs before poll()"
        limit = self.settings.batch
        with self.pool.connection() as conn, conn.transaction():
            scoping.enter(conn, self.who.principal, scoping.API_ROLE)
            xmin, _ = snapshot_bounds(conn)
            rows = fetch_after(conn, self.selection, mark.floor, limit)
            _, xmax = snapshot_bounds(conn)
            fresh = set(mark.fresh([r["id"] for r in rows]))
            new = [r for r in rows if r["id"] in fresh]
            keys = {r["patient_key"] for r in new if r["patient_key"]}
            log_access(conn, self.who, patient_keys=keys, action="events.stream",
                       purpose=self.purpose, end_user=self.end_user,
                       detail={"route": "/v1/events/stream", "rows": len(new)})
        truncated = len(rows) >= limit
        mark.advance(xmin_before=xmin, xmax_after=xmax, ids=[r["id"] for r in rows],
                     truncated=truncated, now=time.monotonic(),
                     settle_after=self.settings.settle_after)
        blocks = [event_block(r["id"], r["type"], _item(r, self.patient)) for r in new]
        return blocks, truncated


@router.get("/v1/events/stream")
async def stream_events(
    request: Request,
    state: State,
    who: EventsReader,
    end_user: EndUser = None,
    purpose: Purpose = "care",
    patient: PatientParam = None,
    type_: TypeParam = None,
    after_id: Annotated[str | None, Query(max_length=20)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> StreamingResponse:
    """Events as ``text/event-stream``: first those after ``Last-Event-ID`` (or ``after_id``)
    in id order, then each event as it is committed; keepalive comments in between."""
    selection = _filter(state, who, patient, None, type_)
    # A reconnecting EventSource sends Last-Event-ID; it wins over the URL's after_id.
    name, given = ("Last-Event-ID", last_event_id) if last_event_id else ("after_id", after_id)
    try:
        start_id = None if given is None else parse_event_id(name, given)
    except EventQueryError as exc:
        raise _bad(exc) from exc
    settings = stream_settings(request.app)
    slots = stream_slots(request.app)
    client = f"{who.principal}/{who.subject}"
    slot = slots.acquire(client, settings.max_per_client,
                         stale=max(3 * settings.heartbeat, 3 * settings.poll_interval, 30.0))
    if slot is None:
        raise HTTPException(429, f"client {who.subject} already has the maximum of"
                            f" {settings.max_per_client} open event streams")
    poller = _Poller(state.pool, who, selection, patient, purpose, end_user, settings)

    async def blocks() -> AsyncIterator[str]:
        try:
            # The starting point is fixed before the first byte goes out: a client that has
            # read the retry block misses no event committed after that.
            await run_in_threadpool(poller.start, start_id)
            yield retry_block(settings.retry_ms)
            last_sent = time.monotonic()
            while not await request.is_disconnected():
                events, more = await run_in_threadpool(poller.poll)
                slots.touch(slot)
                for block in events:
                    yield block
                if events:
                    last_sent = time.monotonic()
                if more:
                    continue
                if time.monotonic() - last_sent >= settings.heartbeat:
                    yield KEEPALIVE
                    last_sent = time.monotonic()
                wait = min(settings.poll_interval,
                           max(settings.heartbeat - (time.monotonic() - last_sent), 0.0))
                await anyio.sleep(wait)
        finally:
            slots.release(slot)

    return StreamingResponse(blocks(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
