"""A terminal's Ctrl-C reaches ``aidlink up``, not the broker it started.

The terminal sends SIGINT to its whole foreground process group. Were the broker in that
group, it would stop at the same moment as the gateway, before the gateway had sent the
acknowledgements of what it stored; ``aidlink up`` stops the gateway first, then the broker.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from gateway.services.mosquitto import MosquittoProcess
from tests.conftest import require_mosquitto

# A stand-in for `aidlink up`: start a broker, wait for Ctrl-C, then report whether the
# broker outlived it (given half a second to die had the signal reached it too).
_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gateway.services.mosquitto import MosquittoProcess
    with MosquittoProcess(data_dir=Path(sys.argv[1])) as broker:
        try:
            print("started", flush=True)  # inside the try: the Ctrl-C may come right after
            time.sleep(60)
        except KeyboardInterrupt:
            time.sleep(0.5)
            print("broker running" if broker.is_running() else "broker gone", flush=True)
""")


def test_ctrl_c_in_the_terminal_leaves_the_broker_to_its_owner(tmp_path: Path) -> None:
    require_mosquitto()
    # A session of its own stands for the terminal: its leader's group is the foreground one.
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "mqtt")],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "started"
        os.killpg(holder.pid, signal.SIGINT)
        out, _ = holder.communicate(timeout=30)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
    assert out.strip() == "broker running"
    assert holder.returncode == 0


def test_ctrl_c_while_the_broker_starts_stops_it(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    require_mosquitto()
    broker = MosquittoProcess(data_dir=tmp_path / "mqtt")

    def interrupted(*_args: object, **_kwargs: object) -> socket.socket:
        raise KeyboardInterrupt
    # The Ctrl-C lands while start() waits for the broker's port.
    monkeypatch.setattr(socket, "create_connection", interrupted)
    with pytest.raises(KeyboardInterrupt):
        broker.start()
    left = [p for p in psutil.Process().children()
            if str(broker.config_path) in " ".join(p.cmdline())]
    for process in left:
        process.kill()  # not to outlive the test when it fails
    assert left == []
    assert not broker.is_running()
