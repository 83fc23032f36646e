"""Federated strategies: one module per algorithm behind one interface, a registry.

Importing this package registers every built-in strategy in :data:`STRATEGIES`.
"""

from engine.fl import auto_fedavg, fedavg, fedprox, local_only  # noqa: F401  (registration)
from engine.fl.base import RoundOutcome, SiteLogic, Strategy
from engine.fl.registry import STRATEGIES

__all__ = ["STRATEGIES", "RoundOutcome", "SiteLogic", "Strategy", "build_strategy"]


def build_strategy(name: str, params: dict, sites: list) -> Strategy:
    """Instantiate the registered strategy ``name`` with validated ``params``."""
    cls = STRATEGIES.get(name)
    return cls(cls.params_from(params), sites)
