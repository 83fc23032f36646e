"""Terminal progress for ``fedseg`` commands: an event subscriber that prints.

On a terminal the current site's step is redrawn in place; in a log (CI, a pipe) only
whole lines are written, one per site phase and one per round.
"""

from __future__ import annotations

import sys
from typing import TextIO

from engine.events import BetaStep, Event, RoundFinished, RoundStarted, RunFinished, RunStarted, RunWarning, SiteProgress


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


class ConsoleProgress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.rounds = 0
        self._partial = False

    def _line(self, text: str) -> None:
        if self._partial:
            self.stream.write("\r\033[K")
            self._partial = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _redraw(self, text: str) -> None:
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._partial = True

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.rounds = event.rounds
            begin = "resuming at" if event.start_round > 1 else "starting at"
            self._line(f"{event.algorithm} on {len(event.sites)} sites ({', '.join(event.sites)}), {event.rounds} rounds, {begin} round {event.start_round}")
        elif isinstance(event, RoundStarted):
            if not self.live:
                self._line(f"round {event.round}/{event.rounds} started")
        elif isinstance(event, SiteProgress):
            bar_len = 20
            filled = int(bar_len * event.step / max(event.total, 1))
            loss = f" loss {event.loss:.3f}" if event.loss is not None else ""
            text = f"round {event.round}/{self.rounds}  {event.site:<10} {event.phase:<10} [{'#' * filled}{'.' * (bar_len - filled)}] {event.step}/{event.total}{loss}"
            if self.live:
                self._redraw(text)
            elif event.step == event.total:
                self._line(text)
        elif isinstance(event, BetaStep):
            if self.live:
                self._redraw(f"round {event.round}/{self.rounds}  beta step {event.step}: " + " ".join(f"{b:.2f}" for b in _flat(event.beta)[:8]))
        elif isinstance(event, RoundFinished):
            m = event.metrics
            sites = " ".join(f"{s} {_fmt(v)}" for s, v in m["val_dice"].items())
            alpha = " ".join(f"{a:.3f}" for a in event.alpha) or "-"
            beta = "" if event.beta is None else "  beta " + " ".join(f"{b:.2f}" for b in _flat(event.beta)[:8])
            self._line(
                f"round {event.round}/{self.rounds} done in {event.seconds:.1f} s  val Dice {_fmt(m['mean_val_dice'])} [{sites}]"
                f"  alpha {alpha}{beta}  up {_mb(event.bytes_up)} down {_mb(event.bytes_down)}"
            )
        elif isinstance(event, RunWarning):
            self._line(f"warning: {event.message}")
        elif isinstance(event, RunFinished):
            s = event.summary
            self._line(
                f"finished in {s.get('wall_time_s') or 0:.0f} s: global test avg {_fmt(s.get('global_test_avg'))}, "
                f"local avg {_fmt(s.get('local_avg'))}, local gen {_fmt(s.get('local_gen'))}, "
                f"DiceS {_fmt(s.get('dice_small'))}, DiceL {_fmt(s.get('dice_large'))}"
            )
            self._line(f"run artefacts: {event.out_dir}")


def _flat(beta: list) -> list[float]:
    out: list[float] = []
    for b in beta:
        out.extend(_flat(b) if isinstance(b, list) else [float(b)])
    return out
