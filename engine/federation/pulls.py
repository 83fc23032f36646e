"""Flower's object pulls, with a back-off sized for a message in flight on a LAN.

Flower 1.41 moves a message in two parts: the message (with its object tree) first, then
the objects (the arrays). Every receiver registers the message and pulls its objects at
once, and the objects are often not there yet: the SuperNode creates the ClientApp's
task *before* it has fetched the objects from the SuperLink, the ServerApp's Grid pulls a
reply while the SuperNode is still pushing its arrays, and so on. Each such miss makes
``pull_objects`` wait with an exponential back-off that starts at **1 s** and doubles
(``flwr/supercore/constant.py``: ``PULL_INITIAL_BACKOFF = 1``, cap 10 s). Measured in
this project: a beta step whose site computes for 0.04 s spent 1-3 s in that wait at
the executor alone (``answered query.learn_beta_step in 3.25 s (pull 3.088, app 0.091 ...)``
in a site's log).

:func:`install` makes every ``pull_objects`` of the process start at 10 ms and stop
doubling at 0.5 s; a missing object is still retried for as long as before (Flower's
``max_time``). The Flower version is pinned exactly because this replaces a module
attribute of three of its modules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

FIRST_BACKOFF_S = 0.01
BACKOFF_CAP_S = 0.5

_MODULES = (
    "flwr.supercore.inflatable.inflatable_utils",  # pull_and_inflate_object_from_tree (ClientApp runtime)
    "flwr.supernode.start_client_internal",  # the SuperNode fetching a message from the SuperLink
    "flwr.superlink.grid.http_grid",  # the ServerApp's Grid fetching replies
)


def quick_backoff(pull_objects: Callable[..., Any]) -> Callable[..., Any]:
    """``pull_objects`` with its back-off lowered to at most 10 ms first, 0.5 s cap."""

    @functools.wraps(pull_objects)
    def pull(*args: Any, **kwargs: Any) -> Any:
        kwargs["initial_backoff"] = min(kwargs.get("initial_backoff", FIRST_BACKOFF_S), FIRST_BACKOFF_S)
        kwargs["backoff_cap"] = min(kwargs.get("backoff_cap", BACKOFF_CAP_S), BACKOFF_CAP_S)
        return pull_objects(*args, **kwargs)

    pull.quick_backoff = True  # type: ignore[attr-defined]
    return pull


def install() -> None:
    """Lower the back-off in every Flower module of this process that pulls objects."""
    import importlib

    from flwr.supercore.inflatable import inflatable_utils

    original = getattr(inflatable_utils.pull_objects, "__wrapped__", inflatable_utils.pull_objects)
    fast = quick_backoff(original)
    for name in _MODULES:
        module = importlib.import_module(name)
        module.pull_objects = fast  # type: ignore[attr-defined]
