"""pulls.install(): every Flower path that pulls a message's objects uses the short back-off."""

from __future__ import annotations

import importlib

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.proto.message_pb2 import ObjectTree  # pylint: disable=E0611
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from engine.federation import pulls


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch):
    for name in pulls._MODULES:  # undone after the test: other tests get Flower as shipped
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "pull_objects", module.pull_objects)
    pulls.install()


def test_every_module_that_pulls_objects_gets_the_short_backoff(installed) -> None:
    for name in pulls._MODULES:
        assert getattr(importlib.import_module(name).pull_objects, "quick_backoff", False), name


def test_flowers_own_call_with_a_one_second_backoff_is_lowered(monkeypatch: pytest.MonkeyPatch) -> None:
    """pull_and_inflate_object_from_tree (the ClientApp runtime's path) passes Flower's
    1 s / 10 s back-off explicitly; what reaches pull_objects is 10 ms / 0.5 s."""
    seen: dict[str, float] = {}

    def flower_pull_objects(object_ids, pull_object_fn, *, initial_backoff=1.0, backoff_cap=10.0, **_):
        seen.update(initial_backoff=initial_backoff, backoff_cap=backoff_cap)
        raise ObjectUnavailableError(object_ids[0])  # stop here: only the arguments matter

    for name in pulls._MODULES:
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "pull_objects", flower_pull_objects)
    pulls.install()
    tree = ObjectTree(object_id="abc", children=[])
    with pytest.raises(ObjectUnavailableError):
        inflatable_utils.pull_and_inflate_object_from_tree(tree, pull_object_fn=lambda _id: b"", confirm_object_received_fn=lambda _id: None)
    assert seen == {"initial_backoff": pulls.FIRST_BACKOFF_S, "backoff_cap": pulls.BACKOFF_CAP_S}
