"""``aidlink db migrate`` and ``aidlink principal``: the schema, then the principals devices
belong to."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from gateway import db
from tests import cli_support
from tests.cli_support import add_principal, environment, failure, lines, one, run, timestamp
from tests.support import count

# The shared fixtures, bound here so that pytest finds them for this module's tests.
env = cli_support.env
offline = cli_support.offline


# --- db migrate ------------------------------------------------------------------------------


def test_db_migrate_applies_every_migration_then_none(database_url: str,
                                                      tmp_path: Path) -> None:
    env = environment(tmp_path, database_url)
    first = one(run(env, "db", "migrate"))
    assert first == {"applied": db.migration_names()}
    assert first["applied"][:5] == ["0001_registry.sql", "0002_readings.sql",
                                    "0003_observations.sql",
                                    "0004_device_time_and_supervision.sql",
                                    "0005_event_identity.sql"]
    assert one(run(env, "db", "migrate")) == {"applied": []}
    assert count(database_url, "SELECT count(*) FROM schema_migrations") == len(
        db.migration_names())


# --- principal -------------------------------------------------------------------------------


def test_principal_add_defaults_to_mtls_and_prints_it(env: dict[str, str | None]) -> None:
    row = one(run(env, "principal", "add", "20", "--name", "Region Dalarna"))
    created_at = timestamp(row.pop("created_at"))
    assert row == {"code": "20", "name": "Region Dalarna", "device_auth": "mtls"}
    assert (datetime.now(created_at.tzinfo) - created_at).total_seconds() < 60


def test_principal_add_twice_names_the_duplicate(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    message = failure(run(env, "principal", "add", "20", "--name", "Region Dalarna igen"))
    assert message == "aidlink: principal 20 already exists\n"
    listed = lines(run(env, "principal", "list"))
    assert [(p["code"], p["name"]) for p in listed] == [("20", "Principal 20")]


def test_principal_add_bad_code_names_the_field(env: dict[str, str | None]) -> None:
    message = failure(run(env, "principal", "add", "bad code!", "--name", "Nowhere"))
    assert message.startswith("aidlink: principal code 'bad code!' is not valid"), message
    assert count(str(env["AIDLINK_DATABASE_URL"]), "SELECT count(*) FROM principals") == 0


def test_principal_list_prints_json_lines_by_code(env: dict[str, str | None]) -> None:
    one(run(env, "principal", "add", "2080", "--name", "Falun"))
    one(run(env, "principal", "add", "20", "--name", "Region Dalarna",
            "--device-auth", "password"))
    result = run(env, "principal", "list")
    assert result.exit_code == 0, result.stderr
    listed = lines(result)
    for row in listed:
        timestamp(row.pop("created_at"))
    assert listed == [
        {"code": "20", "name": "Region Dalarna", "device_auth": "password"},
        {"code": "2080", "name": "Falun", "device_auth": "mtls"},
    ]


def test_without_a_database_principal_list_says_how_to_configure_one(
        offline: dict[str, str | None], tmp_path: Path) -> None:
    message = failure(run(offline, "principal", "list"))
    assert message == (
        f"aidlink: no database: set AIDLINK_DATABASE_URL, or start `aidlink up` "
        f"with --home {tmp_path}\n"
    )
