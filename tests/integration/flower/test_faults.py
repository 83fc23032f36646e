"""Faults of a real federation on loopback, each caused the way it happens in a hospital:
a site process killed (power cut) in the middle of a round and started again, the
coordinator killed between rounds and started again on the same run folder, and a site
given the wrong CA certificate. (Rejected replies: tests/engine/fl/test_reply_checks.py
and tests/engine/federation/test_transport.py; an unregistered key: test_flower_run.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import FederationError
from engine.events import Event, RoundFinished, RoundStarted, RunStarted, RunWarning, read_events
from engine.federation.pki import make_certificates

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(sys.platform != "linux", reason="kills processes the POSIX way"),
]

TOL = 1e-5


def _rounds(out: Path) -> list[dict[str, Any]]:
    return [e for e in read_events(out / "events.jsonl") if e["type"] == "round_finished"]


def _supernode_pid(fed: Any, site: Path) -> int:
    found = re.findall(r"SuperNode up \(pid (\d+)\)", (fed.work_dir(site) / "site.log").read_text())
    assert found, "the site never started its SuperNode"
    return int(found[-1])


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def _power_cut(fed: Any, site: Path) -> None:
    """The site's machine goes down: SuperNode and site process die at once, no goodbye."""
    os.killpg(_supernode_pid(fed, site), signal.SIGKILL)
    fed.sites[site.name].kill()


def test_a_site_killed_mid_round_is_left_out_then_rejoins_as_the_same_node(federation: Any, phantom_sites: list[Path], tiny: Any) -> None:
    fed = federation(phantom_sites, tiny("fedavg", rounds=4), reply_timeout_s=30)
    victim = phantom_sites[2]
    fed.start()
    killed: dict[str, bool] = {}

    def on_event(event: Event) -> None:
        fed.events.append(event)
        if isinstance(event, RoundStarted) and event.round == 2 and not killed:
            time.sleep(1.0)  # the site has pulled its 'train' message and is training
            _power_cut(fed, victim)  # no goodbye to the SuperLink: its node stays "online"
            killed["done"] = True
            fed.start_site(victim)  # restarted at once; it must wait for its old session to expire

    fed.session.follow(on_event)
    out = fed.session.out_dir
    rounds = _rounds(out)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    second, last = rounds[1], rounds[-1]
    assert second["missing_sites"] == [victim.name]
    assert last["missing_sites"] == []  # it is back
    # FedAvg renormalised over the two sites that replied: alpha_k = n_k / (n_1 + n_2)
    n = last["alpha"]  # n_k / n of all three
    expected = [n[0] / (n[0] + n[1]), n[1] / (n[0] + n[1]), 0.0]
    assert second["alpha"] == pytest.approx(expected, abs=1e-9)
    assert min(last["alpha"]) > 0
    warnings = [e.message for e in fed.events if isinstance(e, RunWarning)]
    assert any(f"no 'train' reply from {victim.name} within 30 s; going on with 2" in w for w in warnings), warnings
    # same identity: the restarted SuperNode got the node id of the killed one
    ids = re.findall(r"SuperNode ID: (\d+)", (fed.work_dir(victim) / "supernode.log").read_text())
    assert len(ids) == 2 and ids[0] == ids[1], ids
    assert json.loads((fed.work_dir(victim) / "node.json").read_text())["node_id"] == int(ids[0])
    assert "previous session" in fed.site_log(victim)  # told the operator why it waited


def test_a_site_process_that_dies_takes_its_supernode_with_it(
    federation: Any, phantom_sites: list[Path], tiny: Any, process_alive: Any
) -> None:
    fed = federation(phantom_sites[:2], tiny("fedavg", rounds=1))
    fed.session.start()
    site = phantom_sites[0]
    fed.start_site(site)
    _wait_until(lambda: (fed.work_dir(site) / "node.json").is_file(), 60, "the site joined")
    supernode = _supernode_pid(fed, site)
    fed.sites[site.name].kill()  # the site process only (an out-of-memory kill, say)
    _wait_until(lambda: not process_alive(supernode), 30, "the orphaned SuperNode ended")
    assert "SuperNode terminated gracefully" in (fed.work_dir(site) / "supernode.log").read_text()
    # it said goodbye, so the SuperLink lets the site back in at once, as the same node
    fed.start_site(site)
    _wait_until(lambda: len(re.findall("SuperNode ID", (fed.work_dir(site) / "supernode.log").read_text())) == 2, 30, "the site rejoined")
    assert "previous session" not in fed.site_log(site)


def test_a_killed_coordinator_restarted_on_the_same_folder_resumes_after_its_last_round(
    federation: Any, phantom_sites: list[Path], tiny: Any, demo_run: Any
) -> None:
    fed = federation(phantom_sites, tiny("auto-fedavg", {"beta_steps": 2}))
    fed.start()
    out = fed.session.out_dir
    state = out / "checkpoint" / "state.json"

    def kill_after_round_1(event: Event) -> None:
        if isinstance(event, RoundFinished) and event.round == 1:
            deadline = time.monotonic() + 60
            while not (state.is_file() and json.loads(state.read_text())["round"] == 1):
                assert time.monotonic() < deadline, "no checkpoint of round 1"
                time.sleep(0.05)
            fed.session.superlink.kill()  # SuperLink and ServerApp: a power cut

    with pytest.raises(FederationError, match="SuperLink exited"):
        fed.session.follow(kill_after_round_1)
    fed.session.stop()
    assert not (out / "results.json").exists()
    # its ServerApp ended with it: it must not reconnect to the next SuperLink and go on beside the new one
    _wait_until(lambda: "this ServerApp ends with it" in (out / "coordinator.log").read_text(), 30, "the orphaned ServerApp ended")

    fed.session = fed.new_session()  # the sites stay up and reconnect by themselves
    fed.session.start()
    fed.session.start_run()
    resumed: list[Event] = []
    fed.session.follow(resumed.append)

    events = read_events(out / "events.jsonl")
    starts = [e for e in events if e["type"] == "run_started"]
    assert [s["start_round"] for s in starts] == [1, 2]
    last_start = max(i for i, e in enumerate(resumed) if isinstance(e, RunStarted))  # `follow` shows the run from its start
    assert resumed[last_start].start_round == 2
    assert [e.round for e in resumed[last_start:] if isinstance(e, RoundStarted)] == [2]
    sim = demo_run("auto-fedavg")  # the same run, uninterrupted, in one process
    mine, theirs = _rounds(out), sim.rounds
    assert [r["round"] for r in mine] == [1, 2]
    for a, b in zip(mine, theirs):
        for key in ("alpha", "beta"):
            assert torch.allclose(torch.tensor(a[key], dtype=torch.float64), torch.tensor(b[key], dtype=torch.float64), atol=TOL), key
    final, expected = load_file(str(out / "global_model.safetensors")), load_file(str(sim.out / "global_model.safetensors"))
    assert max(float((final[k] - expected[k]).abs().max()) for k in expected) <= TOL
    assert json.loads((out / "results.json").read_text())["global_test_avg"] == pytest.approx(sim.results["global_test_avg"], abs=TOL)


def test_a_site_without_the_federations_ca_certificate_cannot_connect(federation: Any, phantom_sites: list[Path], tiny: Any, tmp_path: Path) -> None:
    fed = federation(phantom_sites[:2], tiny("fedavg", rounds=1))
    fed.session.start()
    other = make_certificates(tmp_path / "another-federation", ["localhost"])
    stranger = fed.start_site(phantom_sites[0], ca=other.ca)
    assert stranger.popen.wait(60) == 2  # one line, no retrying for ever
    log = fed.site_log(phantom_sites[0])
    assert "certificate does not verify against" in log and str(other.ca) in log, log
    assert "Traceback" not in log
    assert not (fed.work_dir(phantom_sites[0]) / "supernode.log").exists()  # no SuperNode was started
