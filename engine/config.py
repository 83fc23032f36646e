"""Run configuration: frozen dataclasses, loaded from TOML, validated with clear messages.

A wrong value raises :class:`engine.errors.ConfigError` naming the field, the value and
what is allowed ("did you mean ..."), never a bare ``TypeError`` deep inside training.

Defaults are the Auto-FedAvg paper's where the paper states them (Adam lr 1e-4, betas
(0.5, 0.99), Dice loss, 3D U-Net) and CPU-sized where it does not fit a workstation
(a small U-Net, 48x48x24 patches at 2x2x3 mm).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from engine.errors import ConfigError
from engine.registry import check_choice, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICES = ("auto", "cpu", "cuda")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}: must be {bound}, got {value}")


@dataclass(frozen=True)
class DataConfig:
    """How site images become training patches.

    Attributes
    ----------
    lesion_label:
        Label value that is the (binary) lesion target; other labels are background.
    target_spacing:
        Voxel size (mm) every case is resampled to, so that sites of different
        geometry train one network (Auto-FedAvg: 0.8x0.8x5 mm at 256x256x32 crops).
    hu_window:
        HU range mapped linearly to [0, 1] and clipped (soft-tissue window by default).
    patch_size:
        Random crop size in voxels; every dimension divisible by the network's total stride.
    batch_size:
        Patches per training step.
    pos_fraction:
        Share of patches centred on lesion voxels (MONAI ``RandCropByPosNegLabeld``).
    split_seed, val_fraction, test_fraction:
        Used only for sites whose ``dataset.json`` has no ``splits``.
    """

    lesion_label: int = 1
    target_spacing: tuple[float, float, float] = (2.0, 2.0, 3.0)
    hu_window: tuple[float, float] = (-160.0, 240.0)
    patch_size: tuple[int, int, int] = (48, 48, 24)
    batch_size: int = 2
    pos_fraction: float = 0.5
    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.lesion_label < 1:
            raise ConfigError(f"data.lesion_label: must be >= 1, got {self.lesion_label}")
        for s in self.target_spacing:
            _positive("data.target_spacing", s)
        if self.hu_window[0] >= self.hu_window[1]:
            raise ConfigError(f"data.hu_window: low must be below high, got {self.hu_window}")
        for p in self.patch_size:
            if p < 8:
                raise ConfigError(f"data.patch_size: each side must be >= 8, got {self.patch_size}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size: must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.pos_fraction <= 1.0:
            raise ConfigError(f"data.pos_fraction: must be in [0, 1], got {self.pos_fraction}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ConfigError("data.val_fraction/test_fraction: must be in [0, 1)")


@dataclass(frozen=True)
class ModelConfig:
    """Which MONAI network, and its arguments (see ``engine.model.networks``)."""

    network: str = "unet"
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from engine.model.networks import NETWORKS  # late: networks imports torch/monai

        NETWORKS.get(self.network)


@dataclass(frozen=True)
class TrainConfig:
    """Local training at a site (the paper: Adam lr 1e-4, betas (0.5, 0.99), Dice loss)."""

    loss: str = "dice"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.99)
    weight_decay: float = 0.0
    local_steps: int = 20
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        from engine.training.losses import LOSSES

        LOSSES.get(self.loss)
        _positive("train.lr", self.lr)
        _positive("train.weight_decay", self.weight_decay, allow_zero=True)
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas: each must be in [0, 1), got {self.betas}")
        if self.local_steps < 1:
            raise ConfigError(f"train.local_steps: must be >= 1, got {self.local_steps}")
        check_choice("train.device", self.device, DEVICES)


@dataclass(frozen=True)
class EvalConfig:
    """Validation/testing: sliding windows and the small/large lesion split.

    ``small_lesion_ratio`` is FedGS's threshold tau on the inverse foreground fraction
    a^-1 = voxels / lesion voxels, adapted to 3D (ALGORITHMS.md section 2.6): a case is
    "small" when a^-1 >= tau, i.e. its lesion fills less than 1/tau of the volume.
    """

    sw_overlap: float = 0.25
    sw_batch_size: int = 2
    small_lesion_ratio: float = 400.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ConfigError(f"eval.sw_overlap: must be in [0, 1), got {self.sw_overlap}")
        if self.sw_batch_size < 1:
            raise ConfigError(f"eval.sw_batch_size: must be >= 1, got {self.sw_batch_size}")
        _positive("eval.small_lesion_ratio", self.small_lesion_ratio)


@dataclass(frozen=True)
class StrategyConfig:
    """The federated algorithm (a registry name) and its hyperparameters."""

    name: str = "auto-fedavg"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from engine.fl import STRATEGIES

        STRATEGIES.get(self.name).params_from(self.params)  # validates


@dataclass(frozen=True)
class FederationConfig:
    """How a Flower run waits for sites (``fedseg server``; ignored by ``simulate``).

    ``sites`` sites must join before round 1. A round waits for every addressed site up
    to ``reply_timeout_s``; after that it goes on with the replies it has if at least
    ``min_sites`` answered (weights renormalised over them), else it re-sends to the
    missing sites and keeps waiting. ``host``/``port``: where the SuperLink listens;
    ``certificates``: a folder made by ``fedseg certs`` (ca.pem, server.pem, server.key);
    ``site_keys``: a folder of registered site public keys (``*.pub``). Relative paths are
    resolved against the config file's folder.
    """

    sites: int = 3
    min_sites: int = 2
    reply_timeout_s: float = 600.0
    host: str = "0.0.0.0"
    port: int = 9092
    certificates: str = "certificates"
    site_keys: str = "site-keys"

    def __post_init__(self) -> None:
        if self.sites < 1:
            raise ConfigError(f"federation.sites: must be >= 1, got {self.sites}")
        if not 1 <= self.min_sites <= self.sites:
            raise ConfigError(f"federation.min_sites: must be in 1..federation.sites ({self.sites}), got {self.min_sites}")
        _positive("federation.reply_timeout_s", self.reply_timeout_s)
        if not 0 < self.port < 65536:
            raise ConfigError(f"federation.port: must be a TCP port (1..65535), got {self.port}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs besides the site folders."""

    rounds: int = 5
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    #: a model folder (``model.json`` + weights, e.g. an earlier run's folder) whose weights
    #: are the round-0 global model instead of a random initialisation (DEeR fine-tunes it).
    #: Checked against ``model`` where the server builds that model
    #: (``engine.fl.coordinator.initial_global_state``), not here: sites parse this config too
    #: and do not hold the folder.
    init_model: str | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds: must be >= 1, got {self.rounds}")
        if self.init_model is not None and (not isinstance(self.init_model, str) or not self.init_model.strip()):
            raise ConfigError(f"init_model: expected the path of a model folder, got {self.init_model!r}")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def from_dict(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from a plain mapping (TOML or JSON).

    Unknown keys and wrong types raise :class:`ConfigError` naming the dotted field.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {type(values).__name__}")
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        name = f"{prefix}{key}"
        if key not in known:
            hint = f"known: {', '.join(known)}" if known else "this section takes no settings"
            raise ConfigError(f"{name}: unknown setting{did_you_mean(key, known)}; {hint}")
        kwargs[key] = _coerce(hints[key], raw, name)
    return cls(**kwargs)


def _coerce(hint: Any, raw: Any, name: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, raw, f"{name}.")
    origin = get_origin(hint)
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(raw, (list, tuple)) or len(raw) != len(args):
            raise ConfigError(f"{name}: expected a list of {len(args)} values, got {raw!r}")
        return tuple(_coerce(a, v, name) for a, v in zip(args, raw))
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {raw!r}")
        return float(raw)
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        return raw
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{name}: expected true or false, got {raw!r}")
        return raw
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}: expected a string, got {raw!r}")
        return raw
    if origin is not None and origin.__name__ == "Mapping" or hint is Mapping:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{name}: expected a table, got {raw!r}")
        return dict(raw)
    return raw


def load_config(path: str | Path) -> RunConfig:
    """Read a ``run.toml`` into a validated :class:`RunConfig`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return from_dict(RunConfig, values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
