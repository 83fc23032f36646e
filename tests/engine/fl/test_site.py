"""SiteRuntime's progress events: what the app's sites table shows of a site at work."""

from __future__ import annotations

from engine.events import SiteProgress
from engine.fl.base import SiteLogic
from engine.fl.protocol import EVALUATE, Message


def test_evaluation_reports_each_case_with_the_round_and_the_run_length(make_site) -> None:
    site = make_site(SiteLogic, None, cases={"train": 2, "val": 3, "test": 1})
    events: list[SiteProgress] = []
    site.runtime._emit = events.append
    site.handle(Message(EVALUATE, 2, arrays={"model": site.runtime.weights()}, config={"split": "val"}))
    assert [(e.phase, e.round, e.step, e.total) for e in events] == [("evaluate", 2, i, 3) for i in (1, 2, 3)]
    assert {e.rounds for e in events} == {site.runtime.config.rounds} and site.runtime.config.rounds == 3
    assert {e.site for e in events} == {site.runtime.name}
