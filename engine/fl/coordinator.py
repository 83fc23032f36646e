"""The server's round loop, independent of the transport.

For every round it drives the strategy's message generator through a
:class:`~engine.fl.protocol.Transport`, validates the global model on every site,
keeps the best one (highest mean validation Dice, the paper's model selection),
emits events and checkpoints. After the last round it runs the paper's test protocol
(ALGORITHMS.md 0): the best global model on every site's test set, and the K x K matrix
of best local models, then writes the run artefacts of DESIGN.md.

For a personalised strategy (``strategy.personalised``) each site validates its own
personal model, so a round's ``val_dice`` is the personal models' and the best round is
the one with the best mean of them; the test is each site's *personal model of its own
best validation round* (ALGORITHMS.md 13.4), ``global_test_avg`` is the mean of those
per-site test Dice, ``personal_rounds`` says which round each came from, and
``global_model.safetensors`` is the shared model of the best round (what an unseen site
would get).

Checkpoints go to ``OUT/checkpoint/``: round-tagged safetensors first, ``state.json``
last (atomically), so a crash at any point leaves a consistent checkpoint of the
previous round; ``resume`` continues from it and gives the same result.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig
from engine.errors import CheckpointError, ConfigError
from engine.events import EventBus, RoundFinished, RoundStarted, RunFinished, RunStarted, RunWarning, count_lines, finite, truncate_lines
from engine.fl.base import BEST_PERSONAL, PERSONAL, RoundOutcome, Strategy
from engine.fl.protocol import ArrayDict, Exchange, Message, Reply, Transport, payload_bytes
from engine.fl.site import SiteInfo
from engine.model.checkpoint import ModelCard, atomic_write_json, load_tensors, read_card, save_model, save_tensors
from engine.model.networks import build_network, network_args
from engine.training.metrics import CaseResult, local_matrix_metrics, mean_or_none, summarize_cases

log = logging.getLogger(__name__)

EVENTS = "events.jsonl"
RESULTS = "results.json"
CHECKPOINT = "checkpoint"


@dataclass
class Traffic:
    """Protocol bytes (what the algorithm costs) and evaluation bytes, kept apart."""

    up: int = 0
    down: int = 0
    eval_bytes: int = 0


@dataclass
class RunState:
    round: int = 0
    global_state: ArrayDict = field(default_factory=dict)
    best_state: ArrayDict | None = None
    best_round: int | None = None
    best_val: float | None = None
    traffic: Traffic = field(default_factory=Traffic)
    event_lines: int = 0
    elapsed: float = 0.0


class Coordinator:
    """Runs ``config.rounds`` rounds of ``strategy`` over ``transport`` into ``out_dir``."""

    def __init__(
        self,
        config: RunConfig,
        strategy: Strategy,
        transport: Transport,
        sites: list[SiteInfo],
        out_dir: Path,
        bus: EventBus,
        initial_state: ArrayDict,
    ) -> None:
        self.config = config
        self.strategy = strategy
        self.transport = transport
        self.sites = sites
        self.out_dir = Path(out_dir)
        self.bus = bus
        self.state = RunState(global_state=initial_state)
        strategy.emit = bus.emit
        strategy.configure(config)

    # -- messages ----------------------------------------------------------------------
    def _exchange(self, messages: dict[int, Message], *, protocol: bool) -> dict[int, Reply]:
        replies = self._accepted(messages, self.transport.exchange(messages))
        down = sum(m.nbytes for m in messages.values())
        up = sum(r.nbytes for r in replies.values())
        if protocol:
            self.state.traffic.down += down
            self.state.traffic.up += up
        else:
            self.state.traffic.eval_bytes += down + up
        return replies

    def _accepted(self, messages: dict[int, Message], replies: dict[int, Reply]) -> dict[int, Reply]:
        """Drop the replies the strategy cannot use, with the reason in the event log."""
        names = {s.index: s.name for s in self.sites}
        kept = {}
        for k, reply in replies.items():
            problem = self.strategy.check_reply(messages[k], reply, self.state.global_state)
            if problem is None:
                kept[k] = reply
                continue
            text = f"round {messages[k].round}: rejected the '{messages[k].kind}' reply of site {names[k]}: {problem}"
            log.warning(text)
            self.bus.emit(RunWarning(message=text, site=names[k]))
        return kept

    def _drive(self, exchange: Exchange) -> tuple[Any, int, int, set[int]]:
        """Run a strategy generator to completion; return its value, the bytes it moved
        and the sites that missed a message."""
        down0, up0 = self.state.traffic.down, self.state.traffic.up
        missing: set[int] = set()
        try:
            messages = next(exchange)
            while True:
                replies = self._exchange(messages, protocol=True)
                missing |= set(messages) - set(replies)
                messages = exchange.send(replies)
        except StopIteration as stop:
            return stop.value, self.state.traffic.up - up0, self.state.traffic.down - down0, missing

    def _evaluate(self, rnd: int, model: ArrayDict, split: str, use: str | None = None) -> dict[int, list[CaseResult]]:
        return _cases(self._evaluate_replies(rnd, model, split, use))

    def _evaluate_replies(self, rnd: int, model: ArrayDict, split: str, use: str | None = None) -> dict[int, Reply]:
        return self._exchange(self.strategy.evaluate_messages(rnd, model, split, use=use), protocol=False)

    # -- the run -----------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> dict[str, Any]:
        events_path = self.out_dir / EVENTS
        if resume:  # the runner has rewound events.jsonl already (rewind_events)
            self._load_checkpoint()
        start = self.state.round + 1
        self.bus.emit(
            RunStarted(
                algorithm=self.strategy.name,
                sites=[s.name for s in self.sites],
                rounds=self.config.rounds,
                config=self.config.to_dict(),
                start_round=start,
                site_cases={s.name: s.num_train for s in self.sites},
            )
        )
        t_start = time.perf_counter() - self.state.elapsed
        for rnd in range(start, self.config.rounds + 1):
            self._round(rnd)
            self.state.elapsed = time.perf_counter() - t_start
            self._save_checkpoint(events_path)
        results = self._finish(time.perf_counter() - t_start)
        self.bus.emit(RunFinished(out_dir=str(self.out_dir), summary=_summary(results)))
        return results

    def _round(self, rnd: int) -> None:
        t0 = time.perf_counter()
        self.bus.emit(RoundStarted(round=rnd, rounds=self.config.rounds))
        outcome, up, down, missing = self._drive(self.strategy.round(rnd, self.state.global_state))
        assert isinstance(outcome, RoundOutcome)
        self.state.global_state = outcome.global_state
        names = {s.index: s.name for s in self.sites}
        local_val = {names[k]: v for k, v in outcome.local_val_dice.items()}
        if self.strategy.has_global_model:
            use = PERSONAL if self.strategy.personalised else None  # a personalised site validates its own model
            val = {names[k]: mean_or_none([c.dice for c in cases]) for k, cases in self._evaluate(rnd, outcome.global_state, "val", use).items()}
        else:
            val = dict(local_val)
        scores = [v for v in val.values() if v is not None]
        mean_val = mean_or_none(scores)
        if self.strategy.has_global_model and mean_val is not None and (self.state.best_val is None or mean_val > self.state.best_val):
            self.state.best_val, self.state.best_round = mean_val, rnd
            self.state.best_state = {k: v.clone() for k, v in outcome.global_state.items()}
        for k in sorted(missing):
            self.bus.emit(RunWarning(message=f"round {rnd}: site {names[k]} did not reply", site=names[k]))
        self.state.round = rnd
        self.bus.emit(
            RoundFinished(
                round=rnd,
                alpha=list(outcome.alpha),
                beta=outcome.beta,
                metrics={
                    "val_dice": val,
                    "mean_val_dice": mean_val,
                    "local_val_dice": local_val,
                    "train_loss": {names[k]: v for k, v in outcome.train_loss.items()},
                },
                bytes_up=up,
                bytes_down=down,
                seconds=time.perf_counter() - t0,
                missing_sites=[names[k] for k in sorted(missing)],
            )
        )

    # -- test protocol and artefacts ---------------------------------------------------
    def _finish(self, wall: float) -> dict[str, Any]:
        names = [s.name for s in self.sites]
        rnd = self.config.rounds + 1  # evaluation messages come after the last round
        small = self.config.eval.small_lesion_ratio
        results: dict[str, Any] = {
            "algorithm": self.strategy.name,
            "params": self.config.to_dict()["strategy"]["params"],
            "config": self.config.to_dict(),
            "sites": names,
            "rounds": self.config.rounds,
        }
        if self.strategy.has_global_model and self.state.best_state is not None:
            personal = self.strategy.personalised
            replies = self._evaluate_replies(rnd, self.state.best_state, "test", BEST_PERSONAL if personal else None)
            test = _cases(replies)
            per_site = {names[k]: summarize_cases(cases, small) for k, cases in sorted(test.items())}
            all_cases = [c for cases in test.values() for c in cases]
            pooled = summarize_cases(all_cases, small)
            if personal:
                evaluated = "each site's personal model at its best validation round (personal_rounds)"
                selected_by = "shared model of the round with the best mean validation Dice of the personal models"
                results["personal_rounds"] = {names[k]: r.metrics.get("personal_round") for k, r in sorted(replies.items())}
            else:
                evaluated = f"global model of round {self.state.best_round} (best mean validation Dice)"
                selected_by = "best mean validation Dice over sites"
            results.update(
                evaluated_model=evaluated,
                best_round=self.state.best_round,
                best_mean_val_dice=self.state.best_val,
                per_site_test_dice={s: v["dice"] for s, v in per_site.items()},
                per_site_test=per_site,
                global_test_avg=mean_or_none([v["dice"] for v in per_site.values() if v["dice"] is not None]),
                dice_small=pooled["dice_small"],
                dice_large=pooled["dice_large"],
                per_case={names[k]: [c.to_dict() for c in cases] for k, cases in sorted(test.items())},
            )
            card = self._card(self.state.best_round, selected_by)
            save_model(self.out_dir, self.strategy.exported_model(self.state.best_state), card)
        else:
            results.update(evaluated_model="each site's best local model", global_test_avg=None, dice_small=None, dice_large=None)
        best_locals = self._exchange(self.strategy.best_local_messages(rnd), protocol=False)
        matrix: list[list[float | None]] = []
        local_cases: dict[str, list[dict]] = {}
        for i, site in enumerate(self.sites):
            if site.index not in best_locals:  # a site lost for good: the rest of the results still count
                text = f"test: no best local model from site {site.name}; its row of the local matrix stays empty"
                log.warning(text)
                self.bus.emit(RunWarning(message=text, site=site.name))
                matrix.append([None] * len(self.sites))
                continue
            model = best_locals[site.index].arrays["model"]
            tested = self._evaluate(rnd, model, "test")
            row = [mean_or_none([c.dice for c in tested[j.index]]) if j.index in tested else None for j in self.sites]
            matrix.append(row)
            local_cases[site.name] = [c.to_dict() for c in tested.get(site.index, [])]
            if not self.strategy.has_global_model:
                meta = best_locals[site.index].metrics
                exported = self.strategy.exported_model(model)
                local_card = self._card(meta.get("round"), f"best local validation Dice of {site.name}")
                save_model(self.out_dir / "local_models" / site.name, exported, local_card)
        filled = [[v if v is not None else float("nan") for v in row] for row in matrix]
        # sites some test could not reach (lost for good in a federation): results hold the rest
        untested = {s.name for s in self.sites if s.index not in best_locals}
        untested |= {names[j] for row in matrix if any(v is not None for v in row) for j, v in enumerate(row) if v is None}
        untested |= {name for name in names if "per_site_test" in results and name not in results["per_site_test"]}
        results["untested_sites"] = sorted(untested)
        results.update(local_matrix=matrix, local_matrix_sites=names, **local_matrix_metrics(filled), local_per_case=local_cases)
        if not self.strategy.has_global_model:
            results["per_site_test_dice"] = {names[j]: matrix[j][j] for j in range(len(names))}
        results["communication"] = {
            "bytes_up": self.state.traffic.up,
            "bytes_down": self.state.traffic.down,
            "model_bytes": payload_bytes({"m": self.strategy.exported_model(self.state.global_state)}),
            "evaluation_bytes": self.state.traffic.eval_bytes,
        }
        results["wall_time_s"] = wall
        results.update(self.strategy.report())
        atomic_write_json(self.out_dir / RESULTS, finite(results))
        return results

    def _card(self, rnd: int | None, selected_by: str) -> ModelCard:
        cfg = self.config
        return ModelCard(
            network=cfg.model.network,
            network_args=network_args(cfg.model.network, cfg.model.args),
            target_spacing=list(cfg.data.target_spacing),
            hu_window=list(cfg.data.hu_window),
            patch_size=list(cfg.data.patch_size),
            lesion_label=cfg.data.lesion_label,
            algorithm=self.strategy.name,
            round=rnd,
            selected_by=selected_by,
            **self.strategy.model_card_fields(),
        )

    # -- checkpoints -------------------------------------------------------------------
    def _save_checkpoint(self, events_path: Path) -> None:
        folder = self.out_dir / CHECKPOINT
        rnd = self.state.round
        save_tensors(folder / f"global.r{rnd:05d}.safetensors", self.state.global_state)
        if self.state.best_state is not None:
            save_tensors(folder / f"best.r{rnd:05d}.safetensors", self.state.best_state)
        tensors, meta = self.strategy.state_dict()
        save_tensors(folder / f"strategy.r{rnd:05d}.safetensors", tensors or {"empty": torch.zeros(0)})
        traffic = self.state.traffic
        atomic_write_json(
            folder / "state.json",
            {
                "round": rnd,
                "best_round": self.state.best_round,
                "best_val": self.state.best_val,
                "has_best": self.state.best_state is not None,
                "traffic": {"up": traffic.up, "down": traffic.down, "eval_bytes": traffic.eval_bytes},
                "event_lines": count_lines(events_path),
                "elapsed": self.state.elapsed,
                "strategy": meta,
            },
        )
        for old in folder.glob("*.r*.safetensors"):
            if not old.name.endswith(f".r{rnd:05d}.safetensors"):
                old.unlink(missing_ok=True)

    def _load_checkpoint(self) -> None:
        folder = self.out_dir / CHECKPOINT
        saved = checkpoint_state(self.out_dir)
        if saved is None:
            raise CheckpointError(f"{self.out_dir}: no checkpoint to resume from (no {CHECKPOINT}/state.json)")
        rnd = int(saved["round"])
        self.state.round = rnd
        self.state.global_state = load_tensors(folder / f"global.r{rnd:05d}.safetensors")
        if saved["has_best"]:
            self.state.best_state = load_tensors(folder / f"best.r{rnd:05d}.safetensors")
        self.state.best_round, self.state.best_val = saved["best_round"], saved["best_val"]
        t = saved["traffic"]
        self.state.traffic = Traffic(up=t["up"], down=t["down"], eval_bytes=t["eval_bytes"])
        self.state.event_lines = int(saved["event_lines"])
        self.state.elapsed = float(saved["elapsed"])
        tensors = load_tensors(folder / f"strategy.r{rnd:05d}.safetensors")
        tensors.pop("empty", None)
        self.strategy.load_state_dict(tensors, saved["strategy"])
        log.info("resuming %s after round %d", self.out_dir, rnd)


def checkpoint_state(out_dir: Path) -> dict[str, Any] | None:
    """``checkpoint/state.json`` of a run folder, or None when it has no checkpoint."""
    state_path = Path(out_dir) / CHECKPOINT / "state.json"
    if not state_path.is_file():
        return None
    try:
        return json.loads(state_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{state_path}: not valid JSON ({exc})") from None


def rewind_events(out_dir: Path) -> int | None:
    """Cut ``events.jsonl`` back to the checkpoint (events of an interrupted round go);
    returns the checkpointed round, None without a checkpoint.

    Call it before anything appends to, or follows, the event log of a resumed run: a
    reader tailing the file must never see it shrink.
    """
    saved = checkpoint_state(out_dir)
    if saved is None:
        return None
    truncate_lines(Path(out_dir) / EVENTS, int(saved["event_lines"]))
    return int(saved["round"])


def initial_global_state(config: RunConfig) -> ArrayDict:
    """The round-0 global model: the configured network initialised with the run's seed
    (identical in every runner, which the Flower/simulation equivalence relies on), or the
    weights of ``config.init_model`` when set, checked against the configured network."""
    torch.manual_seed(config.seed)
    if config.init_model is not None:
        return load_init_model(config)
    network = build_network(config.model.network, config.model.args)
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def load_init_model(config: RunConfig) -> ArrayDict:
    """The weights of the model folder ``config.init_model``; a missing folder or a model
    of another network than ``config.model`` is a one-line ConfigError."""
    folder = Path(str(config.init_model))
    try:
        card = read_card(folder)
        expected = network_args(config.model.network, config.model.args)
        if card.network != config.model.network or card.network_args != expected:
            raise ConfigError(
                f"init_model: {folder} holds a '{card.network}' {card.network_args}, "
                f"but this run's model is '{config.model.network}' {expected}"
            )
        state = load_tensors(folder / card.weights)
    except CheckpointError as exc:
        raise ConfigError(f"init_model: {exc}") from None
    network = build_network(config.model.network, config.model.args)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"init_model: {folder / card.weights} does not fit the network ({first})") from None
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _cases(replies: dict[int, Reply]) -> dict[int, list[CaseResult]]:
    return {k: [CaseResult(**c) for c in r.metrics["cases"]] for k, r in replies.items()}


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    keys = ("algorithm", "global_test_avg", "local_avg", "local_gen", "dice_small", "dice_large", "best_round", "wall_time_s")
    return {k: results.get(k) for k in keys} | {"per_site_test_dice": results.get("per_site_test_dice")}
