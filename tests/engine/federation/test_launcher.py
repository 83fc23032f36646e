"""ManagedProcess: stopping a child also ends what it left behind in its process group
(the SuperLink's flwr-serverapp outlives the SuperLink otherwise, retrying for minutes)."""

from __future__ import annotations

import os
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
