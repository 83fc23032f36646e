"""ManagedProcess: stopping a child also ends what it left behind in its process group
(the SuperLink's flwr-serverapp outlives the SuperLink otherwise, retrying for minutes),
and a SuperLink ends when the coordinator that started it is killed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.federation.launcher import ManagedProcess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")

# A parent that exits on SIGINT, leaving a child that ignores SIGINT (like flwr-serverapp).
PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    child = "import os, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    subprocess.Popen([sys.executable, "-c", child, sys.argv[1]])
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    time.sleep(120)
    """
)


def test_stop_ends_the_children_a_process_leaves_behind(tmp_path: Path, process_alive) -> None:
    pid_file = tmp_path / "child.pid"
    process = ManagedProcess("parent", [sys.executable, "-c", PARENT, str(pid_file)], tmp_path / "parent.log", env=dict(os.environ))
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert process_alive(child)
    assert process.stop(grace_s=10) == 0  # the parent ended on SIGINT, as asked
    deadline = time.monotonic() + 10
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            os.waitpid(child, os.WNOHANG)  # not our child (it is the parent's): no zombie here
        except ChildProcessError:
            pass
    assert not process_alive(child)


# A coordinator: starts a SuperLink, says where, then waits to be killed.
COORDINATOR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.federation.launcher import free_port, start_superlink, wait_for_port
    from engine.federation.pki import make_certificates
    out = Path(sys.argv[1])
    port = free_port()
    link = start_superlink(make_certificates(out / "pki", ["localhost"]), host="127.0.0.1", port=port, database=out / "superlink.db", log_path=out / "superlink.log")
    wait_for_port("127.0.0.1", port, 120, link)
    (out / "superlink.txt").write_text(f"{link.pid} {port}")
    time.sleep(600)
    """
)


def test_a_superlink_ends_when_its_coordinator_is_killed(tmp_path: Path, process_alive) -> None:
    coordinator = subprocess.Popen([sys.executable, "-c", COORDINATOR, str(tmp_path)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (tmp_path / "superlink.txt").is_file():
        assert coordinator.poll() is None, coordinator.stderr.read().decode()
        assert time.monotonic() < deadline, "the SuperLink never listened"
        time.sleep(0.1)
    pid, port = map(int, (tmp_path / "superlink.txt").read_text().split())
    assert process_alive(pid)
    coordinator.kill()  # a crash: no stop(), no clean-up of any kind
    coordinator.wait()
    deadline = time.monotonic() + 30
    while process_alive(pid):
        assert time.monotonic() < deadline, "the SuperLink outlived its coordinator"
        time.sleep(0.1)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # the port is free for the next `fedseg server`
