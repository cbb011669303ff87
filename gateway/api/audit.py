"""``GET /v1/access-log``: a principal's auditors read who read which patient's data, and why.

Reading the log is not itself logged into it: the log holds reads of patient data, and an
entry here would describe no patient read; it would also make every audit query grow the
very log it pages through. The route runs as the auditors' database role, the only one that
may read the log (and only the caller's principal's entries, by row-level security).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from psycopg.rows import dict_row

from adapters.model import dumps
from gateway.api.deps import AuditConn, Auditor, State
from gateway.api.queries import MAX_PAGE
from provisioning.errors import InvalidInputError
from provisioning.patients import patient_key

router = APIRouter(tags=["audit"])

_BAD_CURSOR = "cursor is not valid; use next_cursor as given"


def encode_cursor(at: datetime, entry_id: int) -> str:
    """An opaque cursor pointing after an entry (entries sort by time, then id)."""
    raw = json.dumps([at.isoformat(), entry_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, int]:
    """A cursor read back; 400 when it is not one this route issued."""
    try:
        padded = text + "=" * (-len(text) % 4)
        at, entry_id = json.loads(base64.urlsafe_b64decode(padded))
        moment = datetime.fromisoformat(at)
        number = int(entry_id)
    except (ValueError, TypeError) as exc:
        raise HTTPException(400, _BAD_CURSOR) from exc
    if moment.tzinfo is None:
        raise HTTPException(400, _BAD_CURSOR)
    return moment, number


@router.get("/v1/access-log")
def read_access_log(
    state: State,
    who: Auditor,
    conn: AuditConn,
    patient: Annotated[str | None, Query(max_length=64, description="patient reference")] = None,
    client: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The principal's access-log entries for a patient and/or a client, newest first."""
    if patient is None and client is None:
        raise HTTPException(400, "give patient or client")
    clauses = ["principal_code = %(principal)s"]
    params: dict[str, Any] = {"principal": who.principal, "limit": limit + 1}
    if patient is not None:
        try:
            params["patient"] = patient_key(state.secret, who.principal, patient)
        except InvalidInputError as exc:
            raise HTTPException(400, f"patient: {exc}") from exc
        clauses.append("patient_key = %(patient)s")
    if client is not None:
        clauses.append("client = %(client)s")
        params["client"] = client
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise HTTPException(400, f"{name} must carry a zone offset (RFC 3339)")
    if since is not None:
        clauses.append("at >= %(since)s")
        params["since"] = since
    if until is not None:
        clauses.append("at < %(until)s")
        params["until"] = until
    if cursor is not None:
        params["a_at"], params["a_id"] = decode_cursor(cursor)
        clauses.append("(at, id) < (%(a_at)s, %(a_id)s)")
    query = ("SELECT id, at, client, role, end_user, patient_key, action, purpose, detail"
             " FROM access_log WHERE " + " AND ".join(clauses)
             + " ORDER BY at DESC, id DESC LIMIT %(limit)s")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query.encode(), params)
        rows = cur.fetchall()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last["at"], last["id"])
    items = [_item(row, patient) for row in rows[:limit]]
    return Response(dumps({"items": items, "next_cursor": next_cursor}),
                    media_type="application/json")


def _item(row: dict[str, Any], patient: str | None) -> dict[str, Any]:
    return {
        "at": row["at"],
        "client": row["client"],
        "role": row["role"],
        "end_user": row["end_user"],
        # The auditor's own reference when it asked by patient; otherwise the pseudonym.
        "patient": patient if patient is not None else row["patient_key"],
        "action": row["action"],
        "purpose": row["purpose"],
        "detail": row["detail"],
    }
