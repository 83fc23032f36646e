"""Device choice: CUDA when asked for or available, CPU otherwise."""

from __future__ import annotations

import torch

from engine.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' was asked for but no CUDA GPU is available (use auto or cpu)")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
