"""``aidlink api`` as a container runs it: the real command in a child process, configured by
the environment, against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from gateway.auth import Role
from gateway.services.postgres import find_free_port
from tests.support import SECRET, bearer, wait_for

AIDLINK = str(Path(sys.executable).parent / "aidlink")


def _env(home: Path, **settings: str) -> dict[str, str]:
    """The parent's environment without any AIDLINK_ setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIDLINK_")}
    env["AIDLINK_HOME"] = str(home)
    env.update(settings)
    return env


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Api:
    """A running ``aidlink api`` child process."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen([AIDLINK, "api", *args], stdout=out,
                                            stderr=subprocess.STDOUT, env=env)

    def wait_healthy(self, base: str) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"aidlink api exited early:\n{self.log.read_text()}")
            try:
                return _get(f"{base}/healthz")[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout=30, what=f"aidlink api at {base} ({self.log})")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def running() -> Iterator[list[Api]]:
    started: list[Api] = []
    yield started
    for api in started:
        api.stop()


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command, expected to end by itself (a refused setting)."""
    return subprocess.run([AIDLINK, "api", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_api_serves_health_metrics_and_tokens_of_the_configured_secret(
        database_url: str, tmp_path: Path, running: list[Api]) -> None:
    db.migrate(database_url)
    port = find_free_port()
    env = _env(tmp_path / "home", AIDLINK_DATABASE_URL=database_url,
               AIDLINK_SECRET=SECRET.decode())
    api = Api(env, tmp_path / "api.log", "--port", str(port))
    running.append(api)
    base = f"http://127.0.0.1:{port}"
    api.wait_healthy(base)

    status, body = _get(f"{base}/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok", "reasons": []})
    status, body = _get(f"{base}/metrics")
    assert status == 200 and b"# TYPE" in body
    # A token signed with the configured secret is accepted: the API uses AIDLINK_SECRET,
    # not a random secret of its own under the home.
    query = f"{base}/v1/observations?patient=19121212-1212"
    status, body = _get(query, bearer("20", Role.CLINICIAN))
    assert status == 200, body
    assert json.loads(body)["items"] == []
    status, _ = _get(query, {"Authorization": "Bearer not-a-token"})
    assert status == 401

    assert api.stop() == 0, api.log.read_text()
    assert "API stopped" in api.log.read_text()


def test_environment_sets_the_address_and_flags_override_it(
        database_url: str, tmp_path: Path, running: list[Api]) -> None:
    db.migrate(database_url)
    from_env, from_flag = find_free_port(), find_free_port()
    env = _env(tmp_path / "home", AIDLINK_DATABASE_URL=database_url,
               AIDLINK_SECRET=SECRET.decode(), AIDLINK_API_PORT=str(from_env))
    by_env = Api(env, tmp_path / "env.log")
    running.append(by_env)
    by_env.wait_healthy(f"http://127.0.0.1:{from_env}")
    by_flag = Api(env, tmp_path / "flag.log", "--port", str(from_flag))
    running.append(by_flag)
    by_flag.wait_healthy(f"http://127.0.0.1:{from_flag}")


def test_without_a_database_it_names_the_setting(tmp_path: Path) -> None:
    done = _run(_env(tmp_path / "home"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("aidlink: no database: set AIDLINK_DATABASE_URL")


@pytest.mark.parametrize(("settings", "expected"), [
    ({"AIDLINK_SECRET": "too-short"}, "AIDLINK_SECRET must be at least 32 characters"),
    ({"AIDLINK_CA_PASSPHRASE": "short"}, "AIDLINK_CA_PASSPHRASE must be at least 16"),
    ({"AIDLINK_DATABASE_URL": "postgresql://aidlink@127.0.0.1:1/aidlink"},
     "database: connection failed"),
    ({"AIDLINK_DATABASE_URL": "postgresql://127.0.0.1/aidlink?colour=blue"},
     'AIDLINK_DATABASE_URL is not a PostgreSQL URL: invalid URI query parameter: "colour"'),
])
def test_a_bad_setting_gives_one_line_naming_it(
        database_url: str, tmp_path: Path, settings: dict[str, str], expected: str) -> None:
    db.migrate(database_url)
    env = _env(tmp_path / "home", AIDLINK_DATABASE_URL=database_url,
               AIDLINK_SECRET=SECRET.decode())
    env.update(settings)
    done = _run(env, "--port", str(find_free_port()))
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"aidlink: {expected}"), done.stderr


def test_an_unmigrated_database_is_refused_with_the_way_out(
        database_url: str, tmp_path: Path) -> None:
    done = _run(_env(tmp_path / "home", AIDLINK_DATABASE_URL=database_url,
                     AIDLINK_SECRET=SECRET.decode()))
    assert done.returncode == 1
    assert done.stderr == ("aidlink: database has no aidlink schema; "
                           "run `aidlink db migrate`\n")


def test_a_port_in_use_is_named(database_url: str, tmp_path: Path) -> None:
    db.migrate(database_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run(_env(tmp_path / "home", AIDLINK_DATABASE_URL=database_url,
                         AIDLINK_SECRET=SECRET.decode()), "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.startswith(f"aidlink: cannot listen on 127.0.0.1:{port}: "), done.stderr
    assert done.stderr.count("\n") == 1
