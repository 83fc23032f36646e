"""Leaving a federation from the app stops the site at once, in the middle of a message.

The Join tab runs ``run_site`` in the app's process (``app.federation.jobs.join``). Its
Leave button sets the worker's cancel token; the site must then stop computing at the
next forward call, not after the training message in hand (with a hospital's settings
that is minutes of work), and its SuperNode must be gone when the worker ends. How long
that takes is measured by ``benchmarks/cancel_latency.py``; here the behaviour is
checked: the site left before finishing its message, sent no model, and left nothing
running.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.federation import jobs
from app.workers import CancellableBus, CancelToken, JobContext
from engine.events import Event, SiteProgress
from engine.federation.site import SiteSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc"),
]

LONG_MESSAGE_STEPS = 5000  # far more than the test waits for: only an interrupt ends it early


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_leave_interrupts_the_message_in_hand_and_stops_the_supernode(
    federation: Any, phantom_sites: list[Path], tiny: Any, process_alive: Any
) -> None:
    config = tiny("fedavg", rounds=1)
    config = config.replace(train=dataclasses.replace(config.train, local_steps=LONG_MESSAGE_STEPS))
    fed = federation(phantom_sites[:2], config, reply_timeout_s=120)
    stayer, leaver = phantom_sites[:2]
    fed.session.start()
    fed.start_site(stayer)
    work = fed.root / "site-work-app" / leaver.name
    settings = SiteSettings.make(
        fed.superlink, leaver, fed.pki / "ca.pem", fed.pki / "site-keys" / leaver.name, name="leaver", work_dir=work
    )

    token = CancelToken()
    published: list[Event] = []
    context = JobContext(
        bus=CancellableBus(token),
        token=token,
        publish=published.append,
        say=lambda line: None,
        note_sites=lambda counts: None,
        note_folder=lambda folder: None,
    )
    outcome: dict[str, Any] = {}

    def run_job() -> None:
        try:
            outcome["result"] = jobs.join(settings)(context)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome["error"] = exc

    joined = threading.Thread(target=run_job, name="join job", daemon=True)
    joined.start()
    fed.session.start_run()

    def training() -> list[SiteProgress]:
        return [e for e in published if isinstance(e, SiteProgress) and e.phase == "train"]

    _wait_until(lambda: any(e.step >= 2 for e in training()), 180, "the joined site trains")
    token.set()  # the operator presses Leave
    joined.join(60)
    assert not joined.is_alive(), "the join job did not end after Leave"

    assert "error" not in outcome, f"leaving is not a failure: {outcome.get('error')!r}"
    assert outcome["result"]["left"] is True
    steps = [e.step for e in training()]
    assert max(steps) < LONG_MESSAGE_STEPS, "the site finished its training message before leaving"
    outbox = work / "outbox.jsonl"
    sent = [json.loads(line) for line in outbox.read_text().splitlines()] if outbox.exists() else []
    assert not any(line["arrays"] for line in sent), "the interrupted site sent a model"
    pids = re.findall(r"SuperNode up \(pid (\d+)\)", (work / "site.log").read_text())
    assert pids, "the site never started its SuperNode"
    assert not process_alive(int(pids[-1])), "the SuperNode outlived the site that left"
    assert "cancelled by the operator" in (work / "site.log").read_text()
