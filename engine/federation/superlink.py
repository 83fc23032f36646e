"""``flower-superlink`` that ends with its coordinator (``python -m engine.federation.superlink``).

A stock SuperLink outlives the process that started it: a coordinator (``fedseg server``,
the app's Host panel, the demo) that is killed or crashes leaves it running, holding the
Fleet port, so the next ``fedseg server`` on that port fails and sites keep talking to a
federation nobody drives. Started ``tied`` (:class:`~engine.federation.launcher.ManagedProcess`),
this entry point stops gracefully when its parent ends, however it ended, exactly as our
SuperNode does (:func:`~engine.federation.supernode.stop_when_parent_dies`); then it runs
Flower's own ``flower_superlink()`` with the same arguments. Its ``flower-superexec`` and
``flwr-serverapp`` children watch the SuperLink's pid (``--parent-pid``) and follow it.
"""

from __future__ import annotations

import sys

from engine.federation.supernode import stop_when_parent_dies

PROGRAM = "flower-superlink"


def main() -> None:
    stop_when_parent_dies()
    from flwr.superlink.cli import flower_superlink

    sys.argv[0] = PROGRAM  # Flower's usage lines and exit events name the program from argv[0]
    flower_superlink()


if __name__ == "__main__":
    main()
