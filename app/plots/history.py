"""``RunHistory``: what the plots know about one run, built from its events (no Qt).

It is fed the engine's events one by one (live) or replays a run folder's
``events.jsonl``; the plots read its arrays (one row per finished round, in round order).
A resumed run starts with ``run_started(start_round=s > 1)``: the rounds from s on are
dropped and then written again, never duplicated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import FedSegError
from engine.events import (
    BetaStep,
    Event,
    RoundFinished,
    RoundStarted,
    RunFailed,
    RunFinished,
    RunStarted,
    RunWarning,
    event_from_dict,
    read_events,
)
from engine.fl.auto_fedavg import AutoFedAvg, AutoFedAvgParams
from engine.fl.coordinator import EVENTS

from app.plots.dirichlet import beta_for_layer


@dataclass(frozen=True)
class RoundRecord:
    """One ``round_finished`` event, as the plots use it."""

    round: int
    alpha: tuple[float, ...]
    beta: list[Any] | None
    val_dice: dict[str, float | None]
    mean_val_dice: float | None
    bytes_up: int
    bytes_down: int
    seconds: float
    missing_sites: tuple[str, ...]


@dataclass(frozen=True)
class BetaStepRecord:
    round: int
    step: int
    beta: list[Any]
    seconds: float | None


@dataclass(frozen=True)
class WarningRecord:
    """A ``warning`` event; ``round`` is the round running when it came (None before)."""

    round: int | None
    message: str
    site: str | None


class RunHistory:
    """The state of one run, built from its events.

    Attributes
    ----------
    sites : list of str
        Site names in the engine's order (the order of alpha and beta).
    algorithm : str or None
    planned_rounds : int or None
    config : dict
        ``run_started``'s config.
    status : str
        "empty" (no run_started yet), "running", "finished" or "failed".
    current_round : int or None
        The last round started.
    warnings : list of WarningRecord
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.sites: list[str] = []
        self.algorithm: str | None = None
        self.planned_rounds: int | None = None
        self.config: dict[str, Any] = {}
        self.start_round = 1
        self.status = "empty"
        self.error: str | None = None
        self.summary: dict[str, Any] = {}
        self.current_round: int | None = None
        self.warnings: list[WarningRecord] = []
        self._rounds: dict[int, RoundRecord] = {}
        self._steps: dict[int, dict[int, BetaStepRecord]] = {}
        self._step_arrays: dict[tuple[int, int | None], tuple[np.ndarray, np.ndarray]] = {}  # (round, layer)
        self._sorted: list[RoundRecord] | None = None

    # -- building --------------------------------------------------------------------
    @classmethod
    def from_events(cls, events: Iterable[Event | dict[str, Any]]) -> RunHistory:
        history = cls()
        for event in events:
            history.add(event)
        return history

    @classmethod
    def from_folder(cls, run_dir: str | Path) -> RunHistory:
        """Replay ``run_dir/events.jsonl`` (or that file itself). A run still being
        written is fine: a torn last line is skipped by ``read_events``."""
        path = Path(run_dir)
        if path.is_dir():
            path = path / EVENTS
        if not path.is_file():
            raise FedSegError(f"{run_dir}: no {EVENTS} here, so this is not a run folder")
        return cls.from_events(read_events(path))

    def add(self, event: Event | dict[str, Any]) -> Event | None:
        """Take one event (an Event or an ``events.jsonl`` dict).

        Returns
        -------
        Event or None
            The event if it changed the history; None if ignored (site progress,
            unknown types from a newer engine).
        """
        if isinstance(event, dict):
            event = event_from_dict(event)
        if isinstance(event, RunStarted):
            self._start(event)
        elif isinstance(event, RoundStarted):
            self.current_round = event.round
            self.planned_rounds = event.rounds
            self._steps.pop(event.round, None)  # a round run again starts its steps afresh
            self._forget_step_arrays(event.round)
        elif isinstance(event, BetaStep):
            self._steps.setdefault(event.round, {})[event.step] = BetaStepRecord(event.round, event.step, event.beta, event.seconds)
            self._forget_step_arrays(event.round)
        elif isinstance(event, RoundFinished):
            self._finish_round(event)
        elif isinstance(event, RunWarning):
            self.warnings.append(WarningRecord(self.current_round, event.message, event.site))
        elif isinstance(event, RunFinished):
            self.status, self.summary = "finished", dict(event.summary)
        elif isinstance(event, RunFailed):
            self.status, self.error = "failed", event.error
        else:
            return None
        return event

    def _start(self, event: RunStarted) -> None:
        resumed = event.start_round > 1 and list(event.sites) == self.sites
        if not resumed:
            self.clear()
        else:  # rounds from start_round on are run again: forget what we had of them
            keep = event.start_round
            self._rounds = {r: rec for r, rec in self._rounds.items() if r < keep}
            self._steps = {r: s for r, s in self._steps.items() if r < keep}
            self._step_arrays.clear()
            self.warnings = [w for w in self.warnings if w.round is None or w.round < keep]
            self._sorted = None
        self.sites = list(event.sites)
        self.algorithm = event.algorithm
        self.planned_rounds = event.rounds
        self.config = dict(event.config)
        self.start_round = event.start_round
        self.status, self.error, self.summary = "running", None, {}
        self.current_round = None

    def _finish_round(self, event: RoundFinished) -> None:
        metrics = event.metrics or {}
        self._rounds[event.round] = RoundRecord(
            round=event.round,
            alpha=tuple(float(a) for a in event.alpha),
            beta=event.beta,
            val_dice=dict(metrics.get("val_dice") or {}),
            mean_val_dice=metrics.get("mean_val_dice"),
            bytes_up=int(event.bytes_up),
            bytes_down=int(event.bytes_down),
            seconds=float(event.seconds),
            missing_sites=tuple(event.missing_sites),
        )
        self._sorted = None

    # -- the run's settings ------------------------------------------------------------
    @property
    def strategy_params(self) -> dict[str, Any]:
        return dict((self.config.get("strategy") or {}).get("params") or {})

    @property
    def weight_kind(self) -> str | None:
        """"dirichlet" or "softmax" for Auto-FedAvg (the config holds only the values a
        user set, so the engine's default fills in), None for fixed-weight strategies."""
        params = self.strategy_params
        if "weights" in params:
            return str(params["weights"])
        return AutoFedAvgParams.weights if self.algorithm == AutoFedAvg.name else None

    @property
    def aggregation(self) -> str | None:
        """"network" or "layer" (one simplex per layer) for Auto-FedAvg, else None."""
        params = self.strategy_params
        if "aggregation" in params:
            return str(params["aggregation"])
        return AutoFedAvgParams.aggregation if self.algorithm == AutoFedAvg.name else None

    @property
    def layer_count(self) -> int:
        """P for layer-wise beta (K x P), 0 for network-wise beta or none."""
        for record in self.rounds:
            if record.beta is not None:
                shape = np.shape(record.beta)
                return int(shape[1]) if len(shape) == 2 else 0
        return 0

    # -- the rounds --------------------------------------------------------------------
    @property
    def rounds(self) -> list[RoundRecord]:
        """Finished rounds in round order."""
        if self._sorted is None:
            self._sorted = [self._rounds[r] for r in sorted(self._rounds)]
        return self._sorted

    def record(self, rnd: int) -> RoundRecord | None:
        return self._rounds.get(rnd)

    @property
    def last_round(self) -> int | None:
        rounds = self.rounds
        return rounds[-1].round if rounds else None

    def round_numbers(self) -> np.ndarray:
        return np.array([r.round for r in self.rounds], dtype=float)

    def alpha_matrix(self) -> np.ndarray:
        """(R, K) alpha per round and site."""
        return self._matrix([r.alpha for r in self.rounds])

    def beta_vector(self, rnd: int, layer: int | None = None) -> np.ndarray | None:
        """beta (K,) of a finished round (layer-wise: one layer, or the mean over layers
        when ``layer`` is None); None when the round has no beta."""
        record = self._rounds.get(rnd)
        if record is None or record.beta is None:
            return None
        return beta_for_layer(record.beta, layer)

    def beta_matrix(self, layer: int | None = None) -> np.ndarray:
        """(R, K) beta per round (see :meth:`beta_vector`); NaN rows without beta."""
        k = len(self.sites)
        rows = [beta_for_layer(r.beta, layer) if r.beta is not None else np.full(k, np.nan) for r in self.rounds]
        return self._matrix(rows)

    def beta_steps(self, rnd: int) -> list[BetaStepRecord]:
        """The beta steps of round ``rnd`` in step order (Auto-FedAvg's learning phase)."""
        steps = self._steps.get(rnd, {})
        return [steps[s] for s in sorted(steps)]

    def beta_step_trace(self, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All beta steps as points (x, beta (N, K)): step s of S in round r sits at
        x = r - 1 + s / S, so the last step of a round lands on the round itself.

        Each round's arrays are kept until its steps change, so a new step costs one
        round's work, not the whole run's.
        """
        parts = [self._round_step_arrays(rnd, layer) for rnd in sorted(self._steps)]
        if not parts:
            return np.zeros(0), self._matrix([])
        return np.concatenate([x for x, _ in parts]), np.concatenate([b for _, b in parts])

    def _round_step_arrays(self, rnd: int, layer: int | None) -> tuple[np.ndarray, np.ndarray]:
        key = (rnd, layer)
        if key not in self._step_arrays:
            steps = self.beta_steps(rnd)
            total = steps[-1].step
            x = np.array([rnd - 1 + s.step / total for s in steps], dtype=float)
            self._step_arrays[key] = (x, self._matrix([beta_for_layer(s.beta, layer) for s in steps]))
        return self._step_arrays[key]

    def _forget_step_arrays(self, rnd: int) -> None:
        for key in [k for k in self._step_arrays if k[0] == rnd]:
            del self._step_arrays[key]

    def val_dice_matrix(self) -> np.ndarray:
        """(R, K) validation Dice per round and site; NaN where a site had none."""
        return self._matrix([[_number(r.val_dice.get(s)) for s in self.sites] for r in self.rounds])

    def mean_val_dice(self) -> np.ndarray:
        return np.array([_number(r.mean_val_dice) for r in self.rounds], dtype=float)

    def bytes_up(self) -> np.ndarray:
        return np.array([r.bytes_up for r in self.rounds], dtype=float)

    def bytes_down(self) -> np.ndarray:
        return np.array([r.bytes_down for r in self.rounds], dtype=float)

    def missing_sites(self) -> dict[int, tuple[str, ...]]:
        """Rounds in which some site did not reply, with those sites."""
        return {r.round: r.missing_sites for r in self.rounds if r.missing_sites}

    def _matrix(self, rows: list[Any]) -> np.ndarray:
        if not rows:
            return np.zeros((0, len(self.sites)))
        return np.array(rows, dtype=float).reshape(len(rows), -1)


def _number(value: Any) -> float:
    return float(value) if value is not None else float("nan")
