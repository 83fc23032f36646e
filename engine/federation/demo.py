"""``fedseg demo --headless``: a whole federation on this machine, over real Flower.

Generates three phantom sites, a CA/server certificate and one key pair per site, starts
a SuperLink (TLS + SuperNode authentication) on a free loopback port and one
``fedseg site`` process per site (each with its own SuperNode), runs the configured
algorithm and shows progress on the terminal. Everything lands in ``--out``:
``sites/``, ``pki/``, ``server/`` (the run artefacts), ``site-work/<site>/`` and logs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from engine.config import FederationConfig, RunConfig
from engine.events import Event
from engine.federation.launcher import ManagedProcess, free_port
from engine.federation.programs import flower_env, python_module
from engine.federation.pki import make_certificates, make_site_key
from engine.federation.server import ServerSession

log = logging.getLogger(__name__)

SITES = 3


def prepare(out: Path, config: RunConfig, sites: int = SITES) -> tuple[RunConfig, list[Path], Path]:
    """Phantom sites, certificates and site keys under ``out``; the config with a free
    loopback port. Returns (config, site folders, pki folder)."""
    from engine.data.phantoms import make_demo_sites

    pki = out / "pki"
    site_dirs = make_demo_sites(out / "sites", sites=sites, seed=config.seed)
    make_certificates(pki, ["localhost"], overwrite=True)
    for site in site_dirs:
        make_site_key(pki / "site-keys" / site.name, overwrite=True)
    fed = FederationConfig(sites=sites, min_sites=min(2, sites), reply_timeout_s=config.federation.reply_timeout_s, host="127.0.0.1", port=free_port())
    return config.replace(federation=fed), site_dirs, pki


def site_command(superlink: str, site: Path, pki: Path, work: Path, *, allow_model_sharing: bool = True, ca: Path | None = None) -> list[str]:
    command = python_module(
        "engine.cli", "site",
        "--superlink", superlink,
        "--data", str(site),
        "--ca", str(ca or pki / "ca.pem"),
        "--key", str(pki / "site-keys" / site.name),
        "--work-dir", str(work),
    )  # fmt: skip
    threads = max(1, (os.cpu_count() or 1) // SITES)  # three sites share this machine's cores
    return command + ["--threads", str(threads)] + (["--allow-model-sharing"] if allow_model_sharing else [])


def start_site(superlink: str, site: Path, pki: Path, out: Path, **kwargs) -> ManagedProcess:
    work = out / "site-work" / site.name
    return ManagedProcess(f"site {site.name}", site_command(superlink, site, pki, work, **kwargs), out / "logs" / f"{site.name}.log", env=flower_env())


def run_demo(config: RunConfig, out: Path, on_event: Callable[[Event], None], say: Callable[[str], None] = print) -> None:
    out = Path(out)
    say(f"preparing {SITES} phantom sites, a CA and site keys in {out}")
    config, site_dirs, pki = prepare(out, config)
    session = ServerSession(config, out / "server", pki, pki / "site-keys")
    sites: list[ManagedProcess] = []
    try:
        session.start()
        superlink = f"127.0.0.1:{config.federation.port}"
        say(f"SuperLink on {superlink} (TLS, {SITES} registered site keys); starting {SITES} SuperNodes")
        sites = [start_site(superlink, site, pki, out) for site in site_dirs]
        session.start_run()
        session.follow(on_event, stop=lambda: _dead_site(sites, say))
    finally:
        for site in sites:
            site.stop()
        session.stop()
    say(f"site logs: {out / 'logs'}; run artefacts: {out / 'server'}")


def _dead_site(sites: list[ManagedProcess], say: Callable[[str], None]) -> bool:
    for site in sites:
        if not site.alive:
            say(f"{site.name} exited (code {site.popen.returncode}); see {site.log_path}")
            return True
    return False
