"""Weighted averages of model states (the core of every FedAvg-like server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from engine.fl.protocol import ArrayDict


def normalise(weights: Mapping[int, float]) -> dict[int, float]:
    """Scale non-negative weights to sum to 1 (a missing site's weight is renormalised away)."""
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"aggregation weights must have a positive sum, got {dict(weights)}")
    return {k: float(w) / total for k, w in weights.items()}


def weighted_average(states: Mapping[int, ArrayDict], weights: Mapping[int, float]) -> ArrayDict:
    """Sum_k w_k * state_k for floating tensors; integer tensors (counters) come from
    the first site. ``weights`` must sum to 1 over the keys of ``states``."""
    keys = sorted(states)
    first = states[keys[0]]
    out: ArrayDict = {}
    for name, ref in first.items():
        if not torch.is_floating_point(ref):
            out[name] = ref.clone()
            continue
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for k in keys:
            acc += float(weights[k]) * states[k][name].to(torch.float64)
        out[name] = acc.to(ref.dtype)
    return out


def layer_groups(names: Sequence[str]) -> list[list[str]]:
    """Group tensor names by their owning module (``conv.weight`` and ``conv.bias`` share
    one layer-wise weight, ALGORITHMS.md 1.3 [I]), in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rsplit(".", 1)[0], []).append(name)
    return list(groups.values())
