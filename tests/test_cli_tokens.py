"""``aidlink token``: signed bearer tokens bound to a principal, a role and scopes, and the
secret kept in the home when none is given."""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path

import jwt
import psycopg

from gateway import db
from gateway.auth import Caller, Role, verify_token
from gateway.token_keys import KeyRing, genesis_key
from tests import cli_support
from tests.cli_support import SECRET_TEXT, add_principal, environment, failure, run

# The shared fixtures, bound here so that pytest finds them for this module's tests.
env = cli_support.env
offline = cli_support.offline


# --- token -----------------------------------------------------------------------------------


def _verified(env: Mapping[str, str | None], token: str) -> Caller:
    """Who a token stands for, checked against the key ring of the environment's database."""
    url = env["AIDLINK_DATABASE_URL"]
    assert url is not None
    ring = KeyRing(lambda: psycopg.connect(url), SECRET_TEXT.encode())
    return verify_token(ring, token)


def test_token_prints_one_bare_token_bound_to_principal_and_role(
        env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    result = run(env, "token", "--principal", "20", "--role", "clinician")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    token = result.stdout.removesuffix("\n")
    assert result.stdout == token + "\n"
    assert token and " " not in token and "\n" not in token
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert _verified(env, token) == Caller(
        principal="20", role=Role.CLINICIAN, subject="cli-clinician")


def test_token_scope_narrows_what_it_grants(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    result = run(env, "token", "--principal", "20", "--role", "clinician", "--scope", "events")
    assert result.exit_code == 0, result.stderr
    assert _verified(env, result.stdout.strip()).scopes == {"events"}
    useless = failure(run(env, "token", "--principal", "20", "--role", "clinician",
                          "--scope", "audit"))
    assert useless == ("aidlink: scope audit is of no use to role clinician"
                       " (its scopes: devices, events, observations)\n")


def test_token_without_a_database_says_how_to_configure_one(
        offline: dict[str, str | None]) -> None:
    message = failure(run(offline, "token", "--principal", "20", "--role", "clinician"))
    assert message.startswith("aidlink: no database: set AIDLINK_DATABASE_URL")


def test_token_for_unknown_principal_fails_when_a_database_is_configured(
        env: dict[str, str | None]) -> None:
    message = failure(run(env, "token", "--principal", "99", "--role", "clinician"))
    assert message == "aidlink: principal 99 does not exist\n"


def test_token_with_unknown_role_is_a_usage_error(offline: dict[str, str | None]) -> None:
    result = run(offline, "token", "--principal", "20", "--role", "janitor")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Invalid value for '--role': 'janitor' is not one of" in result.stderr


def test_token_without_secret_uses_one_kept_in_the_home(database_url: str,
                                                       tmp_path: Path) -> None:
    db.migrate(database_url)
    env = environment(tmp_path, database_url, secret=None)
    add_principal(env, "20")
    result = run(env, "token", "--principal", "20", "--role", "auditor")
    assert result.exit_code == 0, result.stderr
    kept = tmp_path / "secret.key"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # The database's first signing key is derived from the kept secret.
    kid = genesis_key(kept.read_text().strip().encode()).kid
    assert jwt.get_unverified_header(result.stdout.strip())["kid"] == kid
    ring = KeyRing(lambda: psycopg.connect(database_url), kept.read_text().strip().encode())
    caller = verify_token(ring, result.stdout.strip())
    assert caller == Caller(principal="20", role=Role.AUDITOR, subject="cli-auditor")
    # The next invocation reuses the kept secret rather than making another.
    again = run(env, "token", "--principal", "20", "--role", "auditor")
    assert jwt.get_unverified_header(again.stdout.strip())["kid"] == kid
    assert verify_token(ring, again.stdout.strip()) == caller
