"""Federated strategies: one module per algorithm behind one interface, a registry.

Importing this package registers every built-in strategy in :data:`STRATEGIES`.
"""

# importing a strategy module registers it
from engine.fl import (  # noqa: F401
    auto_fedavg,
    deer,
    ditto,
    fedavg,
    fedbn,
    fedgs,
    fedprox,
    fedrdn,
    harmofl,
    local_only,
    prrfl,
    resfim,
)
from engine.fl.base import RoundOutcome, SiteLogic, Strategy
from engine.fl.registry import STRATEGIES

__all__ = ["STRATEGIES", "RoundOutcome", "SiteLogic", "Strategy", "build_strategy"]


def build_strategy(name: str, params: dict, sites: list) -> Strategy:
    """Instantiate the registered strategy ``name`` with validated ``params``."""
    cls = STRATEGIES.get(name)
    return cls(cls.params_from(params), sites)
