"""``flower-superlink`` that ends with its coordinator (``python -m engine.federation.superlink``).

A stock SuperLink outlives the process that started it: a coordinator (``fedseg server``,
the app's Host panel, the demo) that is killed or crashes leaves it running, holding the
Fleet port, so the next ``fedseg server`` on that port fails and sites keep talking to a
federation nobody drives. Started ``tied`` (:class:`~engine.federation.launcher.ManagedProcess`),
this entry point stops gracefully when its parent ends, however it ended, exactly as our
SuperNode does (:func:`~engine.federation.supernode.stop_when_parent_dies`); then it runs
Flower's own ``flower_superlink()`` with the same arguments.

Its ServerApp process must not outlive it either. ``flwr-serverapp`` ignores the SIGINT of
Flower's own parent watch and retries its calls for minutes; if a restarted coordinator
brings a new SuperLink up on the same port and state database meanwhile, the old ServerApp
reconnects and goes on with the old run beside the new one, two coordinators appending to
one ``events.jsonl``. So the SuperLink passes its pid down (:data:`SUPERLINK_PID_ENV`) and
our ServerApp ends the moment that process is gone (:func:`end_with_superlink`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from engine.federation.supernode import stop_when_parent_dies

log = logging.getLogger(__name__)

PROGRAM = "flower-superlink"
SUPERLINK_PID_ENV = "FEDSEG_SUPERLINK_PID"
WATCH_S = 0.2
ORPHANED_EXIT_CODE = 3


def end_with_superlink() -> None:
    """In a ServerApp process: exit at once when the SuperLink that started it has died.

    Nothing is lost: the coordinator's checkpoints are written whole (atomically), and a
    restarted coordinator resumes after the last checkpointed round. A hard exit, because the
    process's own signal handling is Flower's and keeps it alive.
    """
    pid = os.environ.get(SUPERLINK_PID_ENV)
    if not pid:
        return
    from flwr.supercore.app_utils import _pid_exists  # Flower's POSIX/Windows check (pinned version)

    def watch() -> None:
        while _pid_exists(int(pid)):
            time.sleep(WATCH_S)
        log.warning("the SuperLink (pid %s) has ended: this ServerApp ends with it", pid)
        logging.shutdown()
        os._exit(ORPHANED_EXIT_CODE)

    threading.Thread(target=watch, name="end-with-superlink", daemon=True).start()


def main() -> None:
    stop_when_parent_dies()
    os.environ[SUPERLINK_PID_ENV] = str(os.getpid())  # inherited by flower-superexec and its ServerApps
    from flwr.superlink.cli import flower_superlink

    sys.argv[0] = PROGRAM  # Flower's usage lines and exit events name the program from argv[0]
    flower_superlink()


if __name__ == "__main__":
    main()
