"""``fedseg simulate``: K sites in one process, writing the run artefacts.

The run folder holds everything needed to resume: ``run.json`` (site folders and the
config), ``events.jsonl``, ``checkpoint/`` (server) and ``site-state/<site>/`` (each
site's store, which over Flower lives on the site's own disk).
"""

from __future__ import annotations

import json
import math
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig, from_dict
from engine.data.loader import SiteData
from engine.data.site import SiteDataset
from engine.errors import CheckpointError, ConfigError, SiteError
from engine.events import EventBus, recorded_run
from engine.fl import build_strategy
from engine.fl.coordinator import EVENTS, Coordinator, initial_global_state, rewind_events
from engine.fl.site import SiteRuntime
from engine.model.checkpoint import atomic_write_json
from engine.model.networks import total_stride
from engine.simulation.transport import InProcessTransport
from engine.training.device import resolve_device

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


def load_sites(site_dirs: Sequence[str | Path], config: RunConfig) -> list[SiteData]:
    """Open and preprocess every site; site names (folder names) must be unique."""
    if not site_dirs:
        raise SiteError("no site folders given")
    names = [Path(d).name for d in site_dirs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SiteError(f"site folder names must be unique, got {', '.join(duplicates)} twice")
    data = []
    for folder in site_dirs:
        dataset = SiteDataset.open(folder, split_seed=config.data.split_seed, val_fraction=config.data.val_fraction, test_fraction=config.data.test_fraction)
        data.append(SiteData(dataset, config.data))
    return data


def _check_patch(config: RunConfig) -> None:
    stride = total_stride(config.model.network, config.model.args)
    patch = list(config.data.patch_size)
    if any(p % stride for p in patch):
        raise ConfigError(f"data.patch_size: every side must be a multiple of the network's total stride {stride}, got {patch}")
    if math.prod(p // stride for p in patch) < 2:
        # a 1x1x1 bottleneck cannot be instance-normalised
        raise ConfigError(f"data.patch_size: {patch} leaves a single voxel at the network's bottleneck; use at least {2 * stride} along one side")


def simulate(
    site_dirs: Sequence[str | Path],
    config: RunConfig,
    out_dir: str | Path,
    *,
    bus: EventBus | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run ``config`` over the sites in ``site_dirs`` and write artefacts to ``out_dir``."""
    _preflight(config, Path(out_dir), resume)  # fail before the (slow) loading
    return simulate_sites(load_sites(site_dirs, config), config, out_dir, bus=bus, resume=resume)


def _preflight(config: RunConfig, out_dir: Path, resume: bool) -> torch.device:
    """Every check that needs no data: patch size, device, run folder. Returns the device."""
    _check_patch(config)
    device = resolve_device(config.train.device)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir}: exists and is not a folder; choose another --out")
    if not resume and (out_dir / EVENTS).exists():
        raise CheckpointError(f"{out_dir}: already holds a run (use --resume {out_dir} to continue it, or another --out)")
    return device


def simulate_sites(
    sites: Sequence[SiteData],
    config: RunConfig,
    out_dir: str | Path,
    *,
    bus: EventBus | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Like :func:`simulate` on already loaded sites (benchmarks reuse one loading for
    many runs; the cases must have been prepared with ``config.data``)."""
    out_dir = Path(out_dir)
    bus = bus or EventBus()
    device = _preflight(config, out_dir, resume)
    if any(site.cfg != config.data for site in sites):
        raise ConfigError("simulate: the sites were prepared with other data settings than this run's")
    if not resume:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"{out_dir}: cannot create the run folder ({exc.strerror})") from None
        atomic_write_json(out_dir / RUN_FILE, {"sites": [str(s.dataset.root.resolve()) for s in sites], "config": config.to_dict()})
    else:
        rewind_events(out_dir)
    with recorded_run(bus, out_dir / EVENTS):
        runtimes = [
            SiteRuntime(i, data, config, out_dir / "site-state" / data.name, device, emit=bus.emit)
            for i, data in enumerate(sites)
        ]
        infos = [rt.info for rt in runtimes]
        strategy = build_strategy(config.strategy.name, dict(config.strategy.params), infos)
        logics = {rt.index: strategy.site_logic(strategy.params, rt) for rt in runtimes}
        coordinator = Coordinator(config, strategy, InProcessTransport(logics), infos, out_dir, bus, initial_global_state(config))
        return coordinator.run(resume=resume)


def resume(out_dir: str | Path, *, bus: EventBus | None = None) -> dict[str, Any]:
    """Continue an interrupted run from its last checkpoint, with its own config."""
    out_dir = Path(out_dir)
    run_file = out_dir / RUN_FILE
    if not run_file.is_file():
        raise CheckpointError(f"{out_dir}: not a run folder (no {RUN_FILE})")
    try:
        saved = json.loads(run_file.read_text())
        config = from_dict(RunConfig, saved["config"])
    except (json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(f"{run_file}: unreadable ({exc})") from None
    return simulate(saved["sites"], config, out_dir, bus=bus, resume=True)
