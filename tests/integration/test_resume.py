"""Checkpoint/resume: a run that dies inside round 3 and is resumed (through the API and
through ``fedseg simulate --resume``) ends exactly where an uninterrupted run ends.

The crash is injected by wrapping ``InProcessTransport.exchange``: call number N is
delivered to the sites (they train, cache peer models, write their stores) and then an
exception is raised instead of returning the replies, as if the server died right there.
The reference run counts the exchanges that complete rounds 1 and 2, so N lands inside
round 3 after round 2's checkpoint whatever the protocol's message count: for Auto-FedAvg
after the first beta step (peer models of round 3 already cached at the sites), for the
layer-wise variant after the setup message, for local-only after the local training.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from engine.events import EventBus, read_events
from engine.simulation.transport import InProcessTransport

pytestmark = pytest.mark.integration

ROUNDS = 3
SITES = {"site-1", "site-2", "site-3"}
#: variant -> (algorithm, params, which exchange of round 3 dies)
CASES: dict[str, tuple[str, dict[str, Any], int]] = {
    "auto-fedavg": ("auto-fedavg", {"beta_steps": 2, "t0": 1}, 3),
    "auto-fedavg[layer,softmax]": ("auto-fedavg", {"beta_steps": 2, "t0": 1, "aggregation": "layer", "weights": "softmax"}, 2),
    "local-only": ("local-only", {}, 1),
    # personalised: after round 3's validation (v_k and best_personal of round 3 already saved)
    "ditto": ("ditto", {}, 2),
    # state shared once before round 1 (the reference amplitude): a resumed run must not ask again
    "harmofl": ("harmofl", {"r": 0.1}, 1),
    # two half-rounds per round, W0 sent once: crash between the B and the A half-round
    "deer": ("deer", {}, 2),
}


class SimulatedCrash(Exception):
    """Raised by the patched transport in place of a power cut."""


def _patch_transport(mp: pytest.MonkeyPatch, fail_at: int | None = None) -> dict[str, int]:
    original = InProcessTransport.exchange
    calls = {"n": 0}

    def exchange(self: InProcessTransport, messages: dict) -> dict:
        calls["n"] += 1
        replies = original(self, messages)
        if fail_at is not None and calls["n"] == fail_at:
            raise SimulatedCrash(f"simulated crash after exchange {calls['n']}")
        return replies

    mp.setattr(InProcessTransport, "exchange", exchange)
    return calls


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from engine.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def _rounds(out: Path) -> list[tuple[int, list[float], Any, int, int]]:
    return [
        (e["round"], e["alpha"], e["beta"], e["bytes_up"], e["bytes_down"])
        for e in read_events(out / "events.jsonl")
        if e["type"] == "round_finished"
    ]


def _results(out: Path) -> dict[str, Any]:
    results = json.loads((out / "results.json").read_text())
    assert results.pop("wall_time_s") > 0
    return results


def _model_files(out: Path) -> list[Path]:
    """The model artefacts: global_model.safetensors, or local_models/<site>/... ."""
    return sorted(p.relative_to(out) for p in out.rglob("*.safetensors") if p.relative_to(out).parts[0] not in ("checkpoint", "site-state"))


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def reference(case: str, phantom_sites: list[Path], tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted 3-round run, and the exchange counts at the end of each round."""
    from engine.simulation import simulate

    algorithm, params, _ = CASES[case]
    out = tmp_path_factory.mktemp("resume-reference")
    bus = EventBus()
    after_round: dict[int, int] = {}
    with pytest.MonkeyPatch.context() as mp:
        calls = _patch_transport(mp)
        bus.subscribe(lambda e: after_round.__setitem__(e.round, calls["n"]) if e.type == "round_finished" else None)
        simulate(phantom_sites, tiny(algorithm, params, rounds=ROUNDS), out, bus=bus)
    assert sorted(after_round) == [1, 2, 3]
    assert _model_files(out), "the reference run wrote no model"
    return {"out": out, "after_round": after_round}


@pytest.fixture(scope="module")
def interrupted(case: str, reference: dict[str, Any], phantom_sites: list[Path], tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run killed inside round 3 (kept pristine; tests resume copies of it)."""
    from engine.simulation import simulate

    algorithm, params, offset = CASES[case]
    fail_at = reference["after_round"][2] + offset
    assert fail_at <= reference["after_round"][3], "the crash must fall inside round 3"
    out = tmp_path_factory.mktemp("resume-interrupted") / "run"
    with pytest.MonkeyPatch.context() as mp:
        calls = _patch_transport(mp, fail_at=fail_at)
        with pytest.raises(SimulatedCrash):
            simulate(phantom_sites, tiny(algorithm, params, rounds=ROUNDS), out)
        assert calls["n"] == fail_at
    return out


def _copy(src: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module", params=["api", "cli"])
def resumed(request: pytest.FixtureRequest, interrupted: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A copy of the interrupted run, resumed with ``engine.simulation.resume`` (api) or
    ``fedseg simulate --resume DIR`` (cli). The api variant also records the events the
    resumed run emits on its bus."""
    out = _copy(interrupted, tmp_path_factory.mktemp(f"resumed-{request.param}"), "run")
    emitted: list[dict[str, Any]] = []
    stdout, stderr, rc = io.StringIO(), io.StringIO(), 0
    if request.param == "api":
        from engine.simulation import resume

        bus = EventBus()
        bus.subscribe(lambda e: emitted.append(e.to_dict()))
        resume(out, bus=bus)
    else:
        from engine.cli import main

        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(["simulate", "--resume", str(out)])
    return {"mode": request.param, "out": out, "emitted": emitted, "rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_the_crash_hit_round_3_after_the_round_2_checkpoint(interrupted: Path, tmp_path: Path) -> None:
    out = _copy(interrupted, tmp_path, "look")
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["round"] == 2
    events = read_events(out / "events.jsonl")
    assert events[-1]["type"] == "run_failed"
    assert "simulated crash" in events[-1]["error"]
    assert [e["round"] for e in events if e["type"] == "round_finished"] == [1, 2]
    trained_in_3 = {e["site"] for e in events if e["type"] == "site_progress" and e["round"] == 3 and e["phase"] == "train"}
    assert trained_in_3 == SITES, "round 3's local training should have run"
    assert not (out / "results.json").exists()
    assert _model_files(out) == []


def test_resume_gives_the_uninterrupted_model_and_results(resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    out, ref = resumed["out"], reference["out"]
    assert resumed["rc"] == 0, resumed["stderr"]
    assert "Traceback" not in resumed["stderr"]
    if resumed["mode"] == "cli":
        assert "resuming at round 3" in resumed["stdout"], resumed["stdout"]
    files = _model_files(ref)
    assert _model_files(out) == files
    for name in files:
        a, b = load_file(str(out / name)), load_file(str(ref / name))
        assert sorted(a) == sorted(b)
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: tensors differ after resume: {different[:5]}"
        card = name.parent / "model.json"
        assert json.loads((out / card).read_text()) == json.loads((ref / card).read_text())
    assert _results(out) == _results(ref)


@pytest.mark.parametrize("resumed", ["api"], indirect=True)
def test_resumed_run_emits_the_uninterrupted_round_3(resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    """What the resumed run publishes on its bus (what the GUI and CLI show)."""
    emitted = resumed["emitted"]
    assert [e["start_round"] for e in emitted if e["type"] == "run_started"] == [3]
    got = [(e["round"], e["alpha"], e["beta"], e["bytes_up"], e["bytes_down"]) for e in emitted if e["type"] == "round_finished"]
    assert got == [r for r in _rounds(reference["out"]) if r[0] == 3]
    assert emitted[-1]["type"] == "run_finished"


def test_resumed_event_log_equals_uninterrupted(resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    out = resumed["out"]
    assert _rounds(out) == _rounds(reference["out"])
    assert [r[0] for r in _rounds(out)] == [1, 2, 3]
    events = read_events(out / "events.jsonl")
    assert [e["type"] for e in events].count("run_failed") == 0, "the crashed attempt's events must be dropped"
    assert [e["start_round"] for e in events if e["type"] == "run_started"] == [1, 3]
    assert events[-1]["type"] == "run_finished"


def _one_line_error(rc: int, stderr: str) -> str:
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fedseg: error:"), stderr
    return lines[0]


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, stderr = _cli(["simulate", "--resume", str(empty)], capsys)
    line = _one_line_error(rc, stderr)
    assert str(empty) in line


def test_resume_of_a_run_without_checkpoint(phantom_sites: list[Path], tiny: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Killed in round 1: run.json exists but no checkpoint was ever written."""
    from engine.simulation import simulate

    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        _patch_transport(mp, fail_at=1)
        with pytest.raises(SimulatedCrash):
            simulate(phantom_sites, tiny("fedavg", {}, rounds=2), out)
    assert (out / "run.json").is_file() and not (out / "checkpoint" / "state.json").exists()
    rc, _, stderr = _cli(["simulate", "--resume", str(out)], capsys)
    line = _one_line_error(rc, stderr)
    assert "checkpoint" in line
