"""The federation jobs a :class:`~app.workers.RunWorker` runs, built from engine parts.

Each function returns a job: a callable taking a :class:`~app.workers.JobContext`, run in
the worker's thread. They do what the CLI does (``fedseg simulate --demo``, ``fedseg
demo``, ``fedseg server``, ``fedseg site``) with the worker's stop flag threaded through:

* the in-process demo loads the sites one by one (checking the flag between them) and
  runs ``simulate_sites`` on a :class:`~app.workers.CancellableBus`, with every forward
  call checked too (evaluation and the final test protocol emit no events);
* the Flower demo is ``engine.federation.demo.run_demo`` taken apart, because
  ``run_demo`` takes no stop flag: ``ServerSession.follow`` gets one, and its polling
  also forwards the sites' own progress files (the coordinator never sees site steps);
* hosting follows a :class:`~engine.federation.server.ServerSession` with the flag;
* joining runs ``run_site`` with the flag as its ``stop`` event and tails the site's
  progress file. Leaving is not a failure: the message in hand stops at its next
  forward call (the coordinator is told 'cancelled by the operator').
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.workers import Job, JobContext, cancel_at_forward
from engine.config import RunConfig
from engine.errors import FederationError
from engine.events import EventTail, SiteProgress

PROGRESS_FILE = "progress.jsonl"
POLL_S = 0.25


def case_counts(site_dirs: Sequence[Path], config: RunConfig) -> dict[str, int]:
    """Site (folder) name -> its number of training cases under ``config``'s split, the
    count the sites report to the coordinator once the run starts (``RunStarted``)."""
    from engine.data.site import SiteDataset

    d = config.data
    return {
        Path(folder).name: len(SiteDataset.open(folder, split_seed=d.split_seed, val_fraction=d.val_fraction, test_fraction=d.test_fraction).split("train"))
        for folder in site_dirs
    }


def _results(out: Path) -> dict[str, Any]:
    path = out / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# Demo sites hold nothing worth waiting for (the coordinator checkpoints each round): a
# site's first signal lets it finish the message in hand, its second (SIGTERM) stops it
# at once, and a site still unwinding after that is killed; its SuperNode, tied to it,
# follows it.
DEMO_GRACE_S = 0.2
DEMO_TERM_S = 0.5


def stop_all(processes: Sequence[Any], grace_s: float = 10.0, term_s: float = 5.0) -> None:
    """Stop child processes side by side: each may finish the message in hand (up to its
    grace period), so one after the other would add up the waits."""
    threads = [threading.Thread(target=process.stop, args=(grace_s, term_s), name=f"stop {process.name}") for process in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def simulation_demo(config: RunConfig, out: Path, sites: int = 3) -> Job:
    """Phantom sites under ``out/demo-sites`` and an in-process run into ``out``."""

    def job(ctx: JobContext) -> dict[str, Any]:
        from engine.data.phantoms import make_demo_sites
        from engine.simulation import load_sites, simulate_sites

        ctx.note_folder(str(out))
        ctx.say(f"writing {sites} phantom sites to {out / 'demo-sites'}")
        site_dirs = make_demo_sites(out / "demo-sites", sites=sites, seed=config.seed)
        ctx.note_sites(case_counts(site_dirs, config))
        loaded = []
        for folder in site_dirs:
            ctx.token.check()
            ctx.say(f"loading {folder.name} (resampling to {config.data.target_spacing} mm)")
            loaded.extend(load_sites([folder], config))
        with cancel_at_forward(ctx.token):
            return simulate_sites(loaded, config, out, bus=ctx.bus)

    return job


def flower_demo(config: RunConfig, out: Path) -> Job:
    """Three phantom sites federated over Flower on loopback (SuperLink + 3 site processes)."""

    def job(ctx: JobContext) -> dict[str, Any]:
        from engine.federation.demo import prepare, start_site
        from engine.federation.server import ServerSession

        ctx.say(f"preparing phantom sites, a CA and site keys in {out}")
        fed_config, site_dirs, pki = prepare(out, config)
        ctx.note_sites(case_counts(site_dirs, config))
        ctx.note_folder(str(out / "server"))
        session = ServerSession(fed_config, out / "server", pki, pki / "site-keys")
        tails = [EventTail(out / "site-work" / d.name / PROGRESS_FILE) for d in site_dirs]
        processes: list[Any] = []

        def poll() -> bool:
            for tail in tails:
                for event in tail.poll():
                    ctx.bus.emit(event)
            for process in processes:
                if not process.alive:
                    raise FederationError(f"{process.name} exited (code {process.popen.returncode}); see {process.log_path}")
            return ctx.token.is_set()

        try:
            session.start()
            ctx.token.check()
            superlink = f"127.0.0.1:{fed_config.federation.port}"
            ctx.say(f"SuperLink on {superlink}; starting {len(site_dirs)} sites (logs in {out / 'logs'})")
            processes.extend(start_site(superlink, d, pki, out) for d in site_dirs)
            session.start_run()
            session.follow(ctx.bus.emit, stop=poll)
        finally:  # sites and SuperLink stop side by side: neither needs the other to go first
            sites_stopping = threading.Thread(target=stop_all, args=(processes, DEMO_GRACE_S, DEMO_TERM_S), name="stop demo sites")
            sites_stopping.start()
            session.stop()
            sites_stopping.join()
        return _results(out / "server")

    return job


def host(config: RunConfig, out: Path, certificates: Path, site_keys: Path) -> Job:
    """Coordinate a federation into ``out``; the same ``out`` resumes an interrupted run."""

    def job(ctx: JobContext) -> dict[str, Any]:
        from engine.federation.server import ServerSession

        session = ServerSession(config, out, certificates, site_keys)
        ctx.note_folder(str(out))
        try:
            session.start()
            fed = config.federation
            ctx.say(f"coordinator listening on {fed.host}:{fed.port}; waiting for {fed.sites} sites")
            ctx.token.check()
            session.start_run()
            session.follow(ctx.bus.emit, stop=ctx.token.is_set)
        finally:
            session.stop()
        return _results(out)

    return job


def join(settings: Any) -> Job:
    """Serve a federation as one site (``engine.federation.site.SiteSettings``) until left."""

    def job(ctx: JobContext) -> dict[str, Any]:
        from engine.federation.site import run_site

        tail = EventTail(Path(settings.work_dir) / PROGRESS_FILE)
        tail.poll()  # lines of earlier sessions are history, not this session's progress
        outcome: dict[str, Any] = {}

        def serve() -> None:
            try:
                # Leave stops the message in hand at its next forward call: the site
                # answers it with "cancelled by the operator" and nothing is half-saved
                # (the site's store writes whole files only after a message's work).
                with cancel_at_forward(ctx.token):
                    outcome["code"] = run_site(settings, ctx.token, install_signals=False)
            except BaseException as exc:  # noqa: BLE001 - handed to the worker thread below
                outcome["error"] = exc

        def forward() -> None:
            for event in tail.poll():
                if isinstance(event, SiteProgress) and event.site == folder_name:
                    # the site's runtime names itself after its data folder; the
                    # federation knows it by --name
                    event = dataclasses.replace(event, site=settings.name)
                ctx.publish(event)

        folder_name = Path(settings.data).resolve().name
        thread = threading.Thread(target=serve, name=f"site {settings.name}", daemon=True)
        ctx.say(f"site {settings.name}: joining {settings.superlink}")
        thread.start()
        while thread.is_alive():
            thread.join(POLL_S)
            forward()
        forward()
        if "error" in outcome:
            raise outcome["error"]
        ctx.say(f"site {settings.name}: left the federation")
        return {"site": settings.name, "left": ctx.token.is_set(), "code": outcome.get("code")}

    return job
