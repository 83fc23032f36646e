#!/usr/bin/env python
"""How long the app's Leave (Join tab) and Stop (Host tab) take while sites train.

The goal of the desktop app is that cancel works within a second. This script runs the
app's own federation jobs (``app.federation.jobs.host`` and ``jobs.join``, exactly what
the Host and Join tabs run in their workers) on loopback: a coordinator, one site as a
``fedseg site`` process and one site joined in this process. Each training message is
far longer than the measurement (``--local-steps``), so every stop below interrupts work
in hand:

* **leave**: once the joined site has taken two training steps, its cancel token is set
  (the Leave button); measured until the join job has returned: the message in hand
  stopped at its next forward call and the site's SuperNode exited;
* **host stop**: then the coordinator's token is set (the Stop button); measured until
  the host job has returned: the run was stopped and the SuperLink exited;
* **demo stop**: the Demo tab's Flower demo (SuperLink + three ``fedseg site``
  processes), stopped once every site trains; measured until the demo job has returned
  and every process of it is gone.

Repeated ``--repeats`` times on fresh federations; prints and writes the figures. A
measurement, not a test: it exits 0 once it has measured.

    python benchmarks/cancel_latency.py [--repeats 3] [--out benchmarks/results/cancel_latency.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.federation import jobs  # noqa: E402
from app.workers import CancellableBus, CancelToken, JobContext  # noqa: E402
from engine.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig  # noqa: E402
from engine.events import Event, SiteProgress  # noqa: E402
from engine.federation.demo import prepare, start_site  # noqa: E402
from engine.federation.site import SiteSettings  # noqa: E402

GOAL_S = 1.0


class JobThread:
    """An app job run in a thread with its own cancel token, as a RunWorker runs it."""

    def __init__(self, job: Any, name: str) -> None:
        self.token = CancelToken()
        self.events: list[Event] = []
        self.outcome: dict[str, Any] = {}
        self.context = JobContext(
            bus=CancellableBus(self.token),
            token=self.token,
            publish=self.events.append,
            say=lambda line: None,
            note_sites=lambda counts: None,
            note_folder=lambda folder: None,
        )
        self.context.bus.subscribe(self.events.append)
        self.thread = threading.Thread(target=self._run, args=(job,), name=name, daemon=True)
        self.thread.start()

    def _run(self, job: Any) -> None:
        try:
            self.outcome["result"] = job(self.context)
        except BaseException as exc:  # noqa: BLE001 - a stopped host raises FederationError by design
            self.outcome["error"] = f"{type(exc).__name__}: {exc}"

    def trained_steps(self) -> int:
        steps = [e.step for e in self.events if isinstance(e, SiteProgress) and e.phase == "train"]
        return max(steps, default=0)

    def stop_and_time(self, timeout_s: float = 60.0) -> float:
        started = time.perf_counter()
        self.token.set()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"{self.thread.name} did not end within {timeout_s} s of its stop")
        return time.perf_counter() - started


def wait_until(condition: Any, timeout_s: float, what: str, logs: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            for log in sorted(logs.rglob("*.log")) if logs else []:  # why: the processes' own words
                print(f"--- {log} (last lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-8:]))
            raise RuntimeError(f"timed out waiting until {what}")
        time.sleep(0.02)


def long_config(local_steps: int) -> RunConfig:
    return RunConfig(
        rounds=1,
        data=DataConfig(target_spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16)),
        model=ModelConfig("unet", {"channels": [4, 8, 16], "strides": [2, 2]}),
        train=TrainConfig(local_steps=local_steps, device="cpu"),
        strategy=StrategyConfig("fedavg", {}),
    )


def trains(progress: Path) -> bool:
    """Whether a site's progress file shows two training steps (the coordinator never
    sees site steps)."""
    return progress.is_file() and progress.read_text().count('"phase": "train"') >= 2


def one_federation(root: Path, local_steps: int) -> dict[str, float]:
    config, site_dirs, pki = prepare(root, long_config(local_steps), sites=2)
    config = config.replace(federation=dataclasses.replace(config.federation, reply_timeout_s=120))
    stayer, leaver = site_dirs
    host = JobThread(jobs.host(config, root / "server", pki, pki / "site-keys"), "host job")
    superlink = f"127.0.0.1:{config.federation.port}"
    process = start_site(superlink, stayer, pki, root)
    settings = SiteSettings.make(superlink, leaver, pki / "ca.pem", pki / "site-keys" / leaver.name, name="leaver", work_dir=root / "leaver")
    site = JobThread(jobs.join(settings), "join job")
    try:
        wait_until(lambda: site.trained_steps() >= 2, 240, "the joined site trains", root)
        leave_s = site.stop_and_time()
        wait_until(lambda: trains(root / "site-work" / stayer.name / jobs.PROGRESS_FILE), 240, "the other site trains", root)
        stop_s = host.stop_and_time()
    finally:  # after a failed wait too: the jobs' threads are daemons, their processes are not
        for job in (site, host):
            if job.thread.is_alive():
                job.stop_and_time()
        process.stop(1.0)
    return {"leave_s": leave_s, "host_stop_s": stop_s}


def one_demo(root: Path, local_steps: int) -> float:
    demo = JobThread(jobs.flower_demo(long_config(local_steps), root), "demo job")
    progress = [root / "site-work" / f"site-{i}" / jobs.PROGRESS_FILE for i in range(1, 4)]
    try:
        wait_until(lambda: all(trains(p) for p in progress), 300, "every demo site trains", root)
    except RuntimeError:
        demo.stop_and_time()  # ends its SuperLink and sites
        raise
    return demo.stop_and_time()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--local-steps", type=int, default=5000, help="steps of each training message (longer than any wait)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cancel_latency.json")
    args = p.parse_args(argv)
    trials = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="fedseg-cancel-") as tmp:
            trial = one_federation(Path(tmp) / "federation", args.local_steps)
            trial["demo_stop_s"] = one_demo(Path(tmp) / "demo", args.local_steps)
        print(", ".join(f"{k} {v:.2f}" for k, v in trial.items()), flush=True)
        trials.append(trial)
    summary = {
        key: {"max_s": max(t[key] for t in trials), "mean_s": sum(t[key] for t in trials) / len(trials)}
        for key in ("leave_s", "host_stop_s", "demo_stop_s")
    }
    result = {
        "goal_s": GOAL_S,
        "trials": trials,
        "summary": summary,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key, s in summary.items():
        print(f"{key}: max {s['max_s']:.2f} s, mean {s['mean_s']:.2f} s (goal {GOAL_S:g} s)")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
