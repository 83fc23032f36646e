"""The messages a strategy exchanges with sites, independent of the transport.

A strategy's server side is a generator: it *yields* one :class:`Message` per site it
wants to hear from and *receives* the :class:`Reply` of every site that answered. The
in-process simulation delivers messages by calling the site's logic; the Flower runner
(``engine.federation``) turns them into Flower ``Message``/``RecordDict`` objects with
``arrays`` as ``ArrayRecord`` and ``config`` as ``ConfigRecord``. Nothing else crosses a
site's boundary: only named tensors, scalars/lists and counts, never a file path or an
image.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

ArrayDict = dict[str, torch.Tensor]

TRAIN = "train"
EVALUATE = "evaluate"
QUERY_BEST_LOCAL = "query.best_local"


@dataclass
class Message:
    """What the server sends one site: a kind (Flower message type), arrays and config."""

    kind: str
    round: int
    arrays: dict[str, ArrayDict] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return payload_bytes(self.arrays)


@dataclass
class Reply:
    """What a site answers: arrays, JSON-able metrics and its number of training cases."""

    arrays: dict[str, ArrayDict] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    num_examples: int = 0

    @property
    def nbytes(self) -> int:
        return payload_bytes(self.arrays)


Exchange = Generator[dict[int, Message], dict[int, Reply], Any]


def payload_bytes(arrays: Mapping[str, ArrayDict]) -> int:
    """Bytes of tensor data in a message (what a transport must at least move)."""
    return sum(t.numel() * t.element_size() for group in arrays.values() for t in group.values())


class Transport(Protocol):
    """Delivers one message per site and returns the replies of the sites that answered."""

    def exchange(self, messages: dict[int, Message]) -> dict[int, Reply]: ...
