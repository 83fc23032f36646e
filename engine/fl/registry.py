"""The strategy registry: ``fedseg simulate --algorithm NAME`` looks names up here."""

from __future__ import annotations

from engine.registry import Registry

STRATEGIES: Registry[type] = Registry("algorithm")


def register(cls: type) -> type:
    """Class decorator: register a Strategy under its ``name`` with its ``summary``."""
    STRATEGIES.register(cls.name, summary=cls.summary)(cls)
    return cls
