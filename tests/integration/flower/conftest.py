"""A loopback federation over real Flower for the integration tests of this folder.

:class:`Federation` makes a CA and a key per site, starts ``flower-superlink`` (TLS +
SuperNode authentication) through :class:`ServerSession` and one ``fedseg site``
process (SuperNode + persistent executor) per phantom site, exactly as an operator
would, and stops everything at the end of the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.config import FederationConfig, RunConfig
from engine.events import Event
from engine.federation.demo import start_site
from engine.federation.launcher import ManagedProcess, free_port
from engine.federation.pki import make_certificates, make_site_key
from engine.federation.server import ServerSession


class Federation:
    """A loopback federation in ``root`` over the given site folders."""

    def __init__(
        self,
        root: Path,
        site_dirs: list[Path],
        config: RunConfig,
        *,
        registered: list[Path] | None = None,
        reply_timeout_s: float = 300,
    ) -> None:
        self.root = root
        self.site_dirs = site_dirs
        self.pki = root / "pki"
        make_certificates(self.pki, ["localhost"])
        self.keys = root / "registered-keys"
        self.keys.mkdir()
        for site in site_dirs:
            _, public = make_site_key(self.pki / "site-keys" / site.name)
            if registered is None or site in registered:
                (self.keys / public.name).write_bytes(public.read_bytes())
        fed = FederationConfig(
            sites=len(registered or site_dirs), min_sites=2, reply_timeout_s=reply_timeout_s, host="127.0.0.1", port=free_port()
        )
        self.config = config.replace(federation=fed)
        self.session = self.new_session()
        self.sites: dict[str, ManagedProcess] = {}
        self.events: list[Event] = []

    def new_session(self) -> ServerSession:
        """A coordinator on the run folder ``root/server`` (a second one resumes there)."""
        return ServerSession(self.config, self.root / "server", self.pki, self.keys)

    @property
    def superlink(self) -> str:
        return f"127.0.0.1:{self.config.federation.port}"

    def start_site(self, site: Path, **kwargs: Any) -> ManagedProcess:
        old = self.sites.get(site.name)
        if old is not None:
            old.stop()
        self.sites[site.name] = process = start_site(self.superlink, site, self.pki, self.root, **kwargs)
        return process

    def site_log(self, site: Path) -> str:
        return (self.root / "logs" / f"{site.name}.log").read_text()

    def work_dir(self, site: Path) -> Path:
        return self.root / "site-work" / site.name

    def start(self, allow_model_sharing: dict[str, bool] | None = None) -> None:
        allow = allow_model_sharing or {}
        self.session.start()
        for site in self.site_dirs:
            self.start_site(site, allow_model_sharing=allow.get(site.name, True))
        self.session.start_run()

    def run(self, allow_model_sharing: dict[str, bool] | None = None) -> Path:
        self.start(allow_model_sharing)
        self.session.follow(self.events.append, stop=lambda: any(not p.alive for p in self.sites.values()))
        return self.session.out_dir

    def run_next(self, config: RunConfig, name: str) -> Path:
        """Another run on the running SuperLink and sites, into ``root/name`` (what a
        coordinator hosting one experiment after another does)."""
        out = self.root / name
        self.session.next_run(config.replace(federation=self.config.federation), out)
        self.session.follow(self.events.append, stop=lambda: any(not p.alive for p in self.sites.values()))
        return out

    def close(self) -> None:
        for process in self.sites.values():
            process.stop()
        self.session.stop()


@pytest.fixture
def federation(tmp_path: Path):
    """``federation(site_dirs, config, **kwargs)`` -> a :class:`Federation`, closed after the test."""
    made: list[Federation] = []

    def make(site_dirs: list[Path], config: RunConfig, **kwargs: Any) -> Federation:
        fed = Federation(tmp_path, site_dirs, config, **kwargs)
        made.append(fed)
        return fed

    yield make
    for fed in made:
        fed.close()


@pytest.fixture(scope="session")
def shared_federation(tmp_path_factory: pytest.TempPathFactory, phantom_sites: list[Path], tiny: Any):
    """One SuperLink and three sites (model sharing accepted) for the whole session; its
    first run is Auto-FedAvg with the tiny settings of the simulation tests (the same
    parameters as the cached simulation run ``demo_run("auto-fedavg")``), later runs are
    started with :meth:`Federation.run_next`. Starting the processes costs as much as a
    tiny run, so the per-strategy tests share them."""
    root = tmp_path_factory.mktemp("flower-shared")
    fed = Federation(root, phantom_sites, tiny("auto-fedavg", {"beta_steps": 2}))
    try:
        fed.first_run = fed.run()
        yield fed
    finally:
        fed.close()


@pytest.fixture(scope="session")
def flower_auto_fedavg(shared_federation: Federation):
    """The Auto-FedAvg run over Flower: (federation, run folder)."""
    return shared_federation, shared_federation.first_run
