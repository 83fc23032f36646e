"""A small name -> object registry with "did you mean" errors.

Everything that a config names (networks, losses, strategies) is looked up here, so a typo
in a TOML file or on the command line ends in one clear line instead of a ``KeyError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from engine.errors import ConfigError

T = TypeVar("T")


def did_you_mean(value: str, allowed: list[str] | tuple[str, ...]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest allowed value, or ``""``."""
    close = difflib.get_close_matches(str(value), list(allowed), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_choice(field: str, value: str, allowed: list[str] | tuple[str, ...]) -> str:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed``; return it."""
    if value not in allowed:
        raise ConfigError(
            f"{field}: unknown value '{value}'{did_you_mean(value, allowed)}; "
            f"allowed: {', '.join(allowed)}"
        )
    return value


class Registry(Generic[T]):
    """Named entries of one kind, each with a one-line summary.

    Examples
    --------
    >>> losses = Registry("loss")
    >>> @losses.register("dice", summary="soft Dice")
    ... def make_dice(): ...
    >>> losses.get("dice") is make_dice
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._summaries: dict[str, str] = {}

    def register(self, name: str, *, summary: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            self._summaries[name] = summary
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._entries:
            names = self.names()
            raise ConfigError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, names)}; "
                f"available: {', '.join(names)}"
            )
        return self._entries[name]

    def summary(self, name: str) -> str:
        self.get(name)
        return self._summaries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
