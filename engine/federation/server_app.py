"""The coordinator over Flower: a ``ServerApp`` that runs our :class:`Coordinator`.

``fedseg server`` starts a Flower run whose run config carries the RunConfig (JSON), the
output folder and a run key. This ServerApp (launched by the SuperLink) then

1. waits until ``federation.sites`` SuperNodes are connected;
2. asks each one ``query.site_info`` (name, number of training cases, whether it accepts
   model sharing) and numbers the sites by name, so a restarted coordinator numbers them
   the same way;
3. refuses to start a strategy that sends sites each other's models if any site has not
   accepted that, naming the site;
4. drives the same :class:`~engine.fl.coordinator.Coordinator` as ``fedseg simulate``
   through a :class:`FlowerTransport`, writing the same run artefacts; if the output
   folder holds a checkpoint it resumes after the checkpointed round.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from engine.config import RunConfig, from_dict
from engine.errors import FederationError
from engine.events import EventBus, RunWarning, recorded_run
from engine.federation.records import OUT_KEY, RUN_CONFIG_KEY, SITE_INFO
from engine.federation import pulls
from engine.federation.launcher import log_to_file
from engine.federation.superlink import end_with_superlink
from engine.federation.transport import FlowerTransport
from engine.fl import STRATEGIES, build_strategy
from engine.fl.coordinator import EVENTS, Coordinator, initial_global_state, rewind_events
from engine.fl.protocol import Message
from engine.fl.site import SiteInfo
from engine.model.checkpoint import atomic_write_json

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
JOIN_POLL_S = 0.5

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = from_dict(RunConfig, json.loads(str(context.run_config[RUN_CONFIG_KEY])))
    out_dir = Path(str(context.run_config[OUT_KEY]))
    out_dir.mkdir(parents=True, exist_ok=True)
    log_to_file(out_dir / "coordinator.log")
    end_with_superlink()  # never a second coordinator on this run folder (superlink.py)
    pulls.install()  # the sites' replies are pulled while their arrays are still arriving
    run_federation(grid, config, out_dir)


def wait_for_nodes(grid: Grid, count: int, warn) -> list[int]:
    """Node ids of the first ``count`` connected SuperNodes (waits as long as it takes)."""
    last_report = 0.0
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() - last_report > 30:
            warn(f"waiting for sites to join: {len(nodes)} of {count} connected", None)
            last_report = time.monotonic()
        time.sleep(JOIN_POLL_S)


def ask_site_info(grid: Grid, nodes: list[int], timeout_s: float, warn) -> dict[int, dict[str, Any]]:
    """``query.site_info`` to every node; node id -> {name, num_train, allow_model_sharing}.

    Sent through a :class:`FlowerTransport` that needs every node, so the handshake
    follows the rounds' delivery rules: a node the SuperLink lists but cannot reach yet
    (after a SuperLink restart its SuperNode may not have reconnected) is asked again
    once it is online, and a site that answers with an error stops the run, naming it.
    """
    index = dict(enumerate(nodes))  # placeholder site index -> node, until names order them
    transport = FlowerTransport(
        grid, index, {i: f"on node {n}" for i, n in index.items()}, timeout_s=timeout_s, min_sites=len(nodes), warn=warn
    )
    replies = transport.exchange({i: Message(SITE_INFO, 0) for i in index})
    return {index[i]: reply.metrics for i, reply in replies.items()}


def run_federation(grid: Grid, config: RunConfig, out_dir: Path) -> dict[str, Any]:
    """Run ``config`` over the connected sites; write the artefacts into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = rewind_events(out_dir) is not None  # before any event is appended
    bus = EventBus()

    def warn(text: str, site: str | None) -> None:
        log.warning(text)
        bus.emit(RunWarning(message=text, site=site))

    with recorded_run(bus, out_dir / EVENTS):
        fed = config.federation
        nodes = wait_for_nodes(grid, fed.sites, warn)
        infos = ask_site_info(grid, nodes, fed.reply_timeout_s, warn)
        ordered = sorted(infos, key=lambda n: infos[n]["name"])[: fed.sites]
        names = [infos[n]["name"] for n in ordered]
        if len(set(names)) != len(names):
            raise FederationError(f"two sites have the same name ({', '.join(names)}); start one with --name")
        strategy_cls = STRATEGIES.get(config.strategy.name)
        refusing = [infos[n]["name"] for n in ordered if strategy_cls.shares_models and not infos[n]["allow_model_sharing"]]
        if refusing:
            raise FederationError(
                f"site(s) {', '.join(refusing)} refused the run: {strategy_cls.name} sends each site the other sites' "
                "models, which a site must accept with --allow-model-sharing"
            )
        _check_same_sites(out_dir, names, config, resume)
        sites = [SiteInfo(i, infos[n]["name"], int(infos[n]["num_train"])) for i, n in enumerate(ordered)]
        strategy = build_strategy(config.strategy.name, dict(config.strategy.params), sites)
        transport = FlowerTransport(
            grid,
            {i: n for i, n in enumerate(ordered)},
            {i: name for i, name in enumerate(names)},
            timeout_s=fed.reply_timeout_s,
            min_sites=fed.min_sites,
            warn=warn,
        )
        coordinator = Coordinator(config, strategy, transport, sites, out_dir, bus, initial_global_state(config))
        try:
            return coordinator.run(resume=resume)
        finally:
            atomic_write_json(out_dir / "transport.json", transport.report())


def _check_same_sites(out_dir: Path, names: list[str], config: RunConfig, resume: bool) -> None:
    run_file = out_dir / RUN_FILE
    if resume and run_file.is_file():
        saved = json.loads(run_file.read_text())
        if saved.get("sites") != names:
            raise FederationError(f"{out_dir}: the checkpoint is of sites {saved.get('sites')}, but {names} joined")
        return
    atomic_write_json(run_file, {"sites": names, "config": config.to_dict(), "transport": "flower"})
