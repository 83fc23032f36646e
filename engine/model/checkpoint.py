"""Weights in safetensors, descriptions in JSON, both written atomically.

Nothing here unpickles: a checkpoint received from another site or copied from another
machine is only ever parsed as safetensors + JSON. Every write goes to a temporary file
in the same folder and is moved into place with ``os.replace``, so an interrupted write
never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError, ConfigError

MODEL_CARD = "model.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, allow_nan=False) + "\n").encode())


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (contiguous CPU copies) to a safetensors file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(
            {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
            tmp,
            metadata=dict(metadata) if metadata else None,
        )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU; a missing or corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


@dataclass(frozen=True)
class ModelCard:
    """``model.json``: what is needed to run a model without the run's config."""

    network: str
    network_args: dict[str, Any]
    target_spacing: list[float]
    hu_window: list[float]
    patch_size: list[int]
    lesion_label: int
    labels: dict[str, str] = field(default_factory=lambda: {"0": "background", "1": "lesion"})
    weights: str = "global_model.safetensors"
    algorithm: str | None = None
    round: int | None = None
    selected_by: str | None = None
    #: what the strategy did to the preprocessed image before the network, which inference
    #: must repeat: None, or {"kind": "fedrdn" | "harmofl", ...} (see engine.model.inference)
    input_transform: dict[str, Any] | None = None
    format_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: Path) -> ModelCard:
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except TypeError as exc:
            raise CheckpointError(f"{source}: incomplete model description ({exc})") from None


def save_model(folder: str | Path, state: Mapping[str, torch.Tensor], card: ModelCard) -> Path:
    """Write ``card.weights`` and ``model.json`` into ``folder``; return the folder."""
    folder = Path(folder)
    save_tensors(folder / card.weights, state, metadata={"format": "pt", "network": card.network})
    atomic_write_json(folder / MODEL_CARD, card.to_dict())
    return folder


def read_card(folder: str | Path) -> ModelCard:
    folder = Path(folder)
    card_path = folder / MODEL_CARD
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: model folder not found")
    if not card_path.is_file():
        raise CheckpointError(f"{folder}: no {MODEL_CARD} in the model folder")
    try:
        values = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{card_path}: not valid JSON ({exc})") from None
    return ModelCard.from_dict(values, card_path)


def load_model(folder: str | Path) -> tuple[nn.Module, ModelCard]:
    """Build the network described by ``model.json`` and load its weights (eval mode)."""
    from engine.model.networks import build_network

    folder = Path(folder)
    card = read_card(folder)
    try:
        network = build_network(card.network, card.network_args)
    except ConfigError as exc:
        raise CheckpointError(f"{folder / MODEL_CARD}: {exc}") from None
    state = load_tensors(folder / card.weights)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{folder / card.weights}: weights do not fit network '{card.network}' ({first})") from None
    network.eval()
    return network, card
