"""Device models are piloted before they are rolled out: a model's stage is ``pilot`` (limited
to named principals and/or units and a maximum number of devices in service) or ``general``.

A model without a stage row is in general use, so only models put in a pilot are limited.
Promotion to general use is recorded with who and why (``model_stage_history``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from provisioning.policy import PolicyError

Conn = psycopg.Connection[Any]
STAGES = ("pilot", "general")
_MODEL = re.compile(r"^[A-Za-z0-9 ._:/+-]{1,64}$")
_UNIT = re.compile(r"^[^\x00-\x1f]{1,64}$")
_STAGE_COLUMNS = "model, stage, principals, units, max_devices, since, changed_by"


class PilotError(PolicyError):
    """Onboarding outside a model's pilot; the message names the pilot rule broken."""


def _model(model: str) -> str:
    if not _MODEL.fullmatch(model):
        raise InvalidInputError(f"model {model!r} is not valid (pattern {_MODEL.pattern})")
    return model


def _record(conn: Conn, model: str, stage: str, actor: str, reason: str | None,
            **detail: Any) -> None:
    conn.execute("INSERT INTO model_stage_history (model, stage, actor, reason, detail)"
                 " VALUES (%s, %s, %s, %s, %s)", (model, stage, actor, reason, Jsonb(detail)))


def stage_of(conn: Conn, model: str, *, lock: bool = False) -> dict[str, Any] | None:
    """A model's stage row, or None when the model is in general use by default."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_STAGE_COLUMNS} FROM model_stages WHERE model = %s"
                    + (" FOR UPDATE" if lock else ""), (model,))
        return cur.fetchone()


def set_pilot(conn: Conn, model: str, *, principals: Sequence[str] = (),
              units: Sequence[str] = (), max_devices: int | None = None, actor: str,
              reason: str | None = None) -> dict[str, Any]:
    """Put a model in a pilot, or change its pilot's participants and maximum."""
    _model(model)
    chosen = sorted(set(principals))
    chosen_units = sorted({unit.strip() for unit in units})
    if not chosen and not chosen_units:
        raise InvalidInputError(f"a pilot of model {model} needs at least one principal or unit")
    for unit in chosen_units:
        if not _UNIT.fullmatch(unit):
            raise InvalidInputError(f"unit {unit!r} is not valid (1-64 printable characters)")
    if max_devices is not None and max_devices < 1:
        raise InvalidInputError(f"max devices {max_devices} of model {model}'s pilot must be"
                                " at least 1")
    with conn.transaction():
        known = {str(r[0]) for r in conn.execute(
            "SELECT code FROM principals WHERE code = ANY(%s)", (chosen,))}
        unknown = [code for code in chosen if code not in known]
        if unknown:
            raise NotFoundError(f"principal {', '.join(unknown)} does not exist")
        current = stage_of(conn, model, lock=True)
        if current is not None and current["stage"] == "general":
            raise ConflictError(f"model {model} is in general use since"
                                f" {current['since'].isoformat()}; it cannot go back to pilot")
        conn.execute(
            "INSERT INTO model_stages (model, stage, principals, units, max_devices, changed_by)"
            " VALUES (%s, 'pilot', %s, %s, %s, %s) ON CONFLICT (model) DO UPDATE SET"
            " principals = EXCLUDED.principals, units = EXCLUDED.units,"
            " max_devices = EXCLUDED.max_devices, changed_by = EXCLUDED.changed_by",
            (model, chosen, chosen_units, max_devices, actor))
        _record(conn, model, "pilot", actor, reason, principals=chosen, units=chosen_units,
                max_devices=max_devices)
    return describe(conn, model)


def promote(conn: Conn, model: str, *, actor: str, reason: str) -> dict[str, Any]:
    """Promote a piloted model to general use, recording who and why."""
    _model(model)
    if not reason.strip():
        raise InvalidInputError(f"promoting model {model} needs a reason")
    with conn.transaction():
        current = stage_of(conn, model, lock=True)
        if current is None:
            raise NotFoundError(f"model {model} is not in a pilot (it is in general use)")
        if current["stage"] == "general":
            raise ConflictError(f"model {model} was promoted already, at"
                                f" {current['since'].isoformat()}")
        conn.execute("UPDATE model_stages SET stage = 'general', since = now(), changed_by = %s"
                     " WHERE model = %s", (actor, model))
        _record(conn, model, "general", actor, reason.strip())
    return describe(conn, model)


def _in_service(conn: Conn, model: str) -> int:
    row = conn.execute("SELECT count(*) FROM devices WHERE model = %s AND state <> 'retired'",
                       (model,)).fetchone()
    return 0 if row is None else int(row[0])


def check_onboarding(conn: Conn, *, model: str, principal: str, unit: str | None) -> None:
    """PilotError naming the rule when a device of a piloted model may not be onboarded.

    The stage row stays locked until the caller's transaction ends, so two onboardings at
    once cannot both take the pilot's last place.
    """
    stage = stage_of(conn, model, lock=True)
    if stage is None or stage["stage"] == "general":
        return
    if principal not in stage["principals"] and (unit is None or unit not in stage["units"]):
        named = []
        if stage["principals"]:
            named.append(f"principals {', '.join(stage['principals'])}")
        if stage["units"]:
            named.append(f"units {', '.join(stage['units'])}")
        given = "no unit" if unit is None else f"unit {unit}"
        raise PilotError(f"model {model} is in pilot for {' and '.join(named)} only; principal"
                         f" {principal} with {given} is outside it (pilot rule: participants)")
    if stage["max_devices"] is not None and _in_service(conn, model) >= stage["max_devices"]:
        raise PilotError(f"model {model} is in pilot with at most {stage['max_devices']} devices"
                         " in service, all taken (pilot rule: max_devices)")


def history(conn: Conn, model: str) -> list[dict[str, Any]]:
    """Every stage change of a model, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT at, stage, actor, reason, detail FROM model_stage_history"
                    " WHERE model = %s ORDER BY id", (model,))
        return cur.fetchall()


def _public(row: dict[str, Any], devices: int, scope: str | None) -> dict[str, Any]:
    principals = list(row["principals"])
    if scope is not None:
        # A technician learns whether its own principal takes part, not who else does.
        principals = [code for code in principals if code == scope]
    return {"model": row["model"], "stage": row["stage"], "principals": principals,
            "units": list(row["units"]), "max_devices": row["max_devices"],
            "devices_in_service": devices, "since": row["since"], "changed_by": row["changed_by"]}


def describe(conn: Conn, model: str, scope: str | None = None) -> dict[str, Any]:
    """A model's stage, devices in service and stage history (general when never piloted)."""
    _model(model)
    row = stage_of(conn, model)
    devices = _in_service(conn, model)
    if row is None:
        return {"model": model, "stage": "general", "principals": [], "units": [],
                "max_devices": None, "devices_in_service": devices, "since": None,
                "changed_by": None, "history": []}
    steps = history(conn, model)
    if scope is not None:
        for step in steps:
            step["detail"] = {k: v for k, v in step["detail"].items() if k != "principals"}
    return {**_public(row, devices, scope), "history": steps}


def list_stages(conn: Conn, scope: str | None = None) -> list[dict[str, Any]]:
    """Every model with a stage row, by model."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_STAGE_COLUMNS}, (SELECT count(*) FROM devices d WHERE d.model = s.model"
            "   AND d.state <> 'retired') AS devices FROM model_stages s ORDER BY model")
        rows = cur.fetchall()
    return [_public(row, int(row["devices"]), scope) for row in rows]
