"""The federation as this app sees it: a model with Qt signals and no widgets.

:class:`FederationModel` is fed engine events (:meth:`FederationModel.apply`) from
whatever runs: an in-process demo, a Flower demo, a hosted run or this site's own
progress. The views (sites table, progress bar, log) subscribe to its signals; tests
change the model and look at the views (napari's split of model and Qt view).

A site is *offline* when a round lists it in ``missing_sites``, when the coordinator warns
that it is offline or did not reply, or when nothing was heard from it for longer than
the run's reply timeout (:meth:`FederationModel.check_offline`, called by a timer). What
counts as hearing from a site: its own progress, a round it took part in, and a β step
(the coordinator publishes one only after the sites' replies came in). A site that is
heard from again is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal

from engine.events import BetaStep, Event, RoundFinished, RoundStarted, RunFailed, RunFinished, RunStarted, RunWarning, SiteProgress

IDLE, DEMO, HOST, JOIN = "idle", "demo", "host", "join"
MODES = (IDLE, DEMO, HOST, JOIN)

WAITING, TRAINING, LEARNING_BETA, EVALUATING, OFFLINE, DONE = "waiting", "training", "learning β", "evaluating", "offline", "done"
#: What a site is doing during a step of each SiteProgress phase.
PHASE_STATES = {"train": TRAINING, "learn_beta": LEARNING_BETA, "evaluate": EVALUATING}
#: Warnings (engine.fl.coordinator, engine.federation.transport) that mean a site is gone.
OFFLINE_WORDS = ("is offline", "did not reply")
DEFAULT_REPLY_TIMEOUT_S = 600.0


@dataclass
class SiteRow:
    """One site as shown in the sites table."""

    name: str
    state: str = WAITING
    last_seen: float | None = None  # clock() time of the last news from the site
    cases: int | None = None
    last_dice: float | None = None  # validation Dice of the last round that had one
    detail: str = ""  # e.g. "train step 3/20, loss 0.412"


@dataclass
class LogEntry:
    time: float
    level: str  # "info", "warning" or "error"
    text: str


@dataclass
class _Run:
    rounds: int = 0  # R (0: not known, e.g. a site that joined)
    round: int = 0  # the round in progress or last started
    rounds_done: int = 0
    running: bool = False
    reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S
    algorithm: str = ""
    watch_silence: bool = True
    sites: list[SiteRow] = field(default_factory=list)


class FederationModel(QObject):
    """State of the current federation: mode, round r of R, per-site rows, a log.

    Parameters
    ----------
    clock:
        Wall-clock source (``time.time``); tests pass a fake one.
    """

    mode_changed = Signal(str)
    progress_changed = Signal(int, int, int)  # round, rounds (0: unknown), rounds done
    running_changed = Signal(bool)
    sites_reset = Signal()  # rows added or replaced
    site_changed = Signal(int)  # row index
    log_added = Signal(object)  # LogEntry

    def __init__(self, parent: QObject | None = None, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(parent)
        self.clock = clock
        self.mode = IDLE
        self.log: list[LogEntry] = []
        self._run = _Run()

    # -- read access ---------------------------------------------------------------------
    @property
    def sites(self) -> list[SiteRow]:
        return self._run.sites

    @property
    def round(self) -> int:
        return self._run.round

    @property
    def rounds(self) -> int:
        return self._run.rounds

    @property
    def rounds_done(self) -> int:
        return self._run.rounds_done

    @property
    def running(self) -> bool:
        return self._run.running

    @property
    def reply_timeout_s(self) -> float:
        return self._run.reply_timeout_s

    def site(self, name: str) -> SiteRow | None:
        return next((row for row in self._run.sites if row.name == name), None)

    # -- changes from the panels -----------------------------------------------------------
    def begin(self, mode: str, sites: dict[str, int] | None = None, *, watch_silence: bool = True) -> None:
        """Forget the previous run and start showing a new one in ``mode``.

        ``watch_silence=False``: never call a site offline for its silence (in-process
        sites only wait for their turn; a joined site watches nobody else).
        """
        if mode not in MODES:
            raise ValueError(f"mode: one of {', '.join(MODES)}, got {mode!r}")
        rows = [SiteRow(n, cases=c) for n, c in (sites or {}).items()]
        self._run = _Run(running=mode != IDLE, watch_silence=watch_silence, sites=rows)
        self.mode = mode
        self.mode_changed.emit(mode)
        self.sites_reset.emit()
        self._progress()
        self.running_changed.emit(self._run.running)

    def end(self) -> None:
        """The job ended (finished, failed, cancelled or left): stop the offline clock.

        Sites still busy stop being so: a site that left is offline, the sites of a
        stopped run wait (for a resume).
        """
        if not self._run.running:
            return
        self._run.running = False
        left = self.mode == JOIN
        for index, row in enumerate(self._run.sites):
            if row.state not in (DONE, OFFLINE):
                self._set(index, OFFLINE if left else WAITING, "left the federation" if left else "run stopped")
        self.running_changed.emit(False)

    def set_cases(self, cases: dict[str, int]) -> None:
        for name, count in cases.items():
            index = self._row(name)
            self._run.sites[index].cases = int(count)
            self.site_changed.emit(index)

    def add_log(self, level: str, text: str) -> None:
        entry = LogEntry(self.clock(), level, text)
        self.log.append(entry)
        self.log_added.emit(entry)

    # -- engine events -----------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Update the state from one engine event."""
        handler = {
            RunStarted: self._run_started,
            RoundStarted: self._round_started,
            SiteProgress: self._site_progress,
            BetaStep: self._beta_step,
            RoundFinished: self._round_finished,
            RunWarning: self._warning,
            RunFinished: self._run_finished,
            RunFailed: self._run_failed,
        }.get(type(event))
        if handler is not None:
            handler(event)

    def check_offline(self) -> list[str]:
        """Mark sites silent for longer than the reply timeout offline; return their names."""
        if not (self._run.running and self._run.watch_silence):
            return []
        now, limit = self.clock(), self._run.reply_timeout_s
        gone = []
        for index, row in enumerate(self._run.sites):
            if row.state in (OFFLINE, DONE) or row.last_seen is None or now - row.last_seen <= limit:
                continue
            gone.append(row.name)
            self._set(index, OFFLINE, f"nothing heard for {now - row.last_seen:.0f} s (reply timeout {limit:g} s)")
            self.add_log("warning", f"site {row.name}: nothing heard for more than {limit:g} s; offline")
        return gone

    # -- handlers ----------------------------------------------------------------------------
    def _run_started(self, event: RunStarted) -> None:
        run = self._run
        run.algorithm, run.rounds, run.running = event.algorithm, event.rounds, True
        run.round = run.rounds_done = event.start_round - 1
        timeout = (event.config.get("federation") or {}).get("reply_timeout_s")
        run.reply_timeout_s = float(timeout) if timeout else DEFAULT_REPLY_TIMEOUT_S
        known = {row.name: row for row in run.sites}
        now = self.clock()  # the reply timeout runs from the start for a site never heard of
        def cases(name: str) -> int | None:  # the sites' own count first; a demo knows its folders beforehand
            return event.site_cases.get(name, known[name].cases if name in known else None)

        run.sites = [SiteRow(n, WAITING, now, cases(n)) for n in event.sites]
        self.sites_reset.emit()
        self._progress()
        self.running_changed.emit(True)
        begin = f"resuming at round {event.start_round}" if event.start_round > 1 else "starting"
        self.add_log("info", f"{event.algorithm} on {len(event.sites)} sites ({', '.join(event.sites)}), {event.rounds} rounds, {begin}")

    def _round_started(self, event: RoundStarted) -> None:
        self._run.round, self._run.rounds = event.round, event.rounds
        for index, row in enumerate(self._run.sites):
            if row.state != OFFLINE:
                self._set(index, WAITING, "")
        self._progress()
        self.add_log("info", f"round {event.round} of {event.rounds} started")

    def _site_progress(self, event: SiteProgress) -> None:
        index = self._row(event.site)
        state = PHASE_STATES.get(event.phase, WAITING)
        if event.phase == "train" and event.step >= event.total:
            state = EVALUATING  # a site validates its local model right after training
        elif event.phase == "learn_beta" and event.step >= event.total:
            state = WAITING
        loss = f", loss {event.loss:.3f}" if event.loss is not None else ""
        self._set(index, state, f"{event.phase} step {event.step}/{event.total}{loss}", seen=True)
        if event.round > self._run.round or event.rounds != self._run.rounds:  # a joined site learns them from its own work
            self._run.round = max(self._run.round, event.round)
            self._run.rounds = event.rounds or self._run.rounds
            self._progress()

    def _beta_step(self, event: BetaStep) -> None:
        for index, row in enumerate(self._run.sites):
            if row.state != OFFLINE:
                self._set(index, row.state, row.detail, seen=True)

    def _round_finished(self, event: RoundFinished) -> None:
        run = self._run
        run.rounds_done = max(run.rounds_done, event.round)
        last = bool(run.rounds) and event.round >= run.rounds
        for name, value in (event.metrics.get("val_dice") or {}).items():
            if value is not None:
                run.sites[self._row(name)].last_dice = float(value)
        for name in event.missing_sites:
            self._row(name)
        for index, row in enumerate(run.sites):
            if row.name in event.missing_sites:
                self._set(index, OFFLINE, f"missing from round {event.round}")
            else:  # it replied: back, if it was offline
                self._set(index, DONE if last else WAITING, "", seen=True)
        self._progress()
        mean = event.metrics.get("mean_val_dice")
        score = f"mean validation Dice {mean:.3f}" if mean is not None else "no validation Dice"
        missing = f"; missing: {', '.join(event.missing_sites)}" if event.missing_sites else ""
        self.add_log("info", f"round {event.round} of {run.rounds or '?'} done in {event.seconds:.1f} s, {score}{missing}")

    def _warning(self, event: RunWarning) -> None:
        self.add_log("warning", event.message)
        if event.site and any(words in event.message for words in OFFLINE_WORDS):
            self._set(self._row(event.site), OFFLINE, event.message)

    def _run_finished(self, event: RunFinished) -> None:
        run = self._run
        run.rounds_done = run.round = max(run.rounds, run.round)
        for index, row in enumerate(run.sites):
            if row.state != OFFLINE:
                self._set(index, DONE, "")
        self._progress()
        test = event.summary.get("global_test_avg")
        score = f"global test Dice {test:.3f}; " if test is not None else ""
        self.add_log("info", f"run finished: {score}artefacts in {event.out_dir}")
        self.end()

    def _run_failed(self, event: RunFailed) -> None:
        self.add_log("error", f"run failed: {event.error}")
        self.end()

    # -- helpers -----------------------------------------------------------------------------
    def _row(self, name: str) -> int:
        """Index of the row of site ``name``, added if new (a site seen before RunStarted)."""
        for index, row in enumerate(self._run.sites):
            if row.name == name:
                return index
        self._run.sites.append(SiteRow(name))
        self.sites_reset.emit()
        return len(self._run.sites) - 1

    def _set(self, index: int, state: str, detail: str, *, seen: bool = False) -> None:
        row = self._run.sites[index]
        row.state, row.detail = state, detail
        if seen:
            row.last_seen = self.clock()
        self.site_changed.emit(index)

    def _progress(self) -> None:
        run = self._run
        self.progress_changed.emit(run.round, run.rounds, run.rounds_done)
