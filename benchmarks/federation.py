"""Flower against the in-process simulation, for the same work (a script, not a test).

For each scenario the same config runs twice on the same three phantom sites: once with
``simulate_sites`` and once over a loopback Flower federation (SuperLink with TLS and
SuperNode authentication, one ``fedseg site`` process per site). Reported:

* round wall time, Flower vs simulation. The simulation trains the sites one after
  another in one process; over Flower they train in parallel processes that share this
  machine's cores, so the two differ by more than the transport. Hence also:
* transport overhead: for every exchange, its wall time at the coordinator minus the
  compute time of the slowest site on that message (each site's ``outbox.jsonl``),
  summed over the rounds, as a fraction of the Flower round time;
* time per beta step (Auto-FedAvg), end to end at the coordinator, and its transport
  part (the same subtraction);
* bytes of a FedAvg round as Flower serialises them (``transport.json``) against
  2*K*model bytes, and Auto-FedAvg's extra bytes against (K-1)/(2 t0) of FedAvg's.

    python benchmarks/federation.py [--out benchmarks/results/federation] [--only NAME...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from engine.config import RunConfig, StrategyConfig, TrainConfig
from engine.data.phantoms import make_demo_sites
from engine.events import read_events
from engine.federation.demo import prepare, start_site
from engine.federation.server import ServerSession
from engine.simulation import load_sites, simulate_sites

SCENARIOS = {
    # name: (algorithm, params, local steps, rounds)
    "fedavg-small": ("fedavg", {}, 5, 2),
    "fedavg-realistic": ("fedavg", {}, 80, 2),
    # a round of ~1.5 min in the simulation: where the fixed per-round cost of Flower stops mattering
    "fedavg-long": ("fedavg", {}, 400, 2),
    "auto-fedavg": ("auto-fedavg", {"beta_steps": 10, "t0": 1}, 5, 2),
    # the same phase in 2 messages of 5 beta steps (beta_local_steps, docs/algorithms.md)
    "auto-fedavg-5-steps-per-message": ("auto-fedavg", {"beta_steps": 10, "t0": 1, "beta_local_steps": 5}, 5, 2),
}


def config_for(algorithm: str, params: dict, steps: int, rounds: int) -> RunConfig:
    return RunConfig(rounds=rounds, train=TrainConfig(local_steps=steps, lr=3e-3, device="cpu"), strategy=StrategyConfig(algorithm, params))


def over_flower(config: RunConfig, out: Path) -> Path:
    config, site_dirs, pki = prepare(out, config)
    session = ServerSession(config, out / "server", pki, pki / "site-keys")
    sites = []
    try:
        session.start()
        sites = [start_site(f"127.0.0.1:{config.federation.port}", s, pki, out) for s in site_dirs]
        session.start_run()
        session.follow(lambda e: None, stop=lambda: any(not p.alive for p in sites))
    finally:
        for p in sites:
            p.stop()
        session.stop()
    return out / "server"


def seconds_per_beta_step(events: list[dict]) -> list[float]:
    """Each beta_step event's exchange time divided by the steps its message covered (one,
    or ``beta_local_steps``: an event carries the last step of its message)."""
    out, previous = [], {}
    for e in events:
        if e["type"] != "beta_step" or e.get("seconds") is None:
            continue
        covered = e["step"] - previous.get(e["round"], 0)
        previous[e["round"]] = e["step"]
        out.append(e["seconds"] / covered)
    return out


def summarise(run_dir: Path) -> dict:
    events = read_events(run_dir / "events.jsonl")
    rounds = [e for e in events if e["type"] == "round_finished"]
    steps = seconds_per_beta_step(events)
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "round_s": [r["seconds"] for r in rounds],
        "beta_step_s_median": statistics.median(steps) if steps else None,
        "protocol_bytes_per_round": [r["bytes_up"] + r["bytes_down"] for r in rounds],
        "model_bytes": results["communication"]["model_bytes"],
        "rounds": len(rounds),
    }


def site_compute(work_dirs: list[Path]) -> dict[tuple[str, str], list[float]]:
    """(kind, round) -> per exchange of that kind in that round (in order), the compute
    seconds of the slowest site, from the sites' outbox.jsonl."""
    per_site: list[dict[tuple[str, str], list[float]]] = []
    for work in work_dirs:
        seen: dict[tuple[str, str], list[float]] = {}
        for line in (work / "outbox.jsonl").read_text().splitlines():
            entry = json.loads(line)
            seen.setdefault((entry["type"], str(entry["round"])), []).append(entry["seconds"])
        per_site.append(seen)
    keys = set().union(*per_site)
    return {key: [max(values) for values in zip(*(site.get(key, []) for site in per_site if key in site))] for key in keys}


def transport_split(flower_dir: Path, work_dirs: list[Path], rounds: int) -> dict:
    """Exchange wall time vs the slowest site's compute, per message kind (rounds only)."""
    exchanges = json.loads((flower_dir / "transport.json").read_text())["exchanges"]
    compute = site_compute(work_dirs)
    used: dict[tuple[str, str], int] = {}
    kinds: dict[str, dict[str, float]] = {}
    for ex in exchanges:
        if ex["round"] > rounds:  # the final test protocol is not part of a round
            continue
        key = (ex["kind"], str(ex["round"]))
        i = used.get(key, 0)
        used[key] = i + 1
        slowest = compute.get(key, [])[i] if i < len(compute.get(key, [])) else 0.0
        entry = kinds.setdefault(ex["kind"], {"exchanges": 0, "wall_s": 0.0, "site_compute_s": 0.0})
        entry["exchanges"] += 1
        entry["wall_s"] += ex["seconds"]
        entry["site_compute_s"] += slowest
    for entry in kinds.values():
        entry["transport_s"] = entry["wall_s"] - entry["site_compute_s"]
        entry["transport_s_per_exchange"] = entry["transport_s"] / entry["exchanges"]
        entry["wall_s_per_exchange"] = entry["wall_s"] / entry["exchanges"]
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/federation")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    table = []
    for name in args.only or SCENARIOS:
        algorithm, params, steps, rounds = SCENARIOS[name]
        config = config_for(algorithm, params, steps, rounds)
        sim_dir = out / "runs" / f"{name}-sim"
        sites = make_demo_sites(out / "runs" / f"{name}-sim-sites", sites=3, seed=config.seed)
        simulate_sites(load_sites(sites, config), config, sim_dir)
        flower_root = out / "runs" / f"{name}-flower"
        flower_dir = over_flower(config, flower_root)
        sim, fl = summarise(sim_dir), summarise(flower_dir)
        report = json.loads((flower_dir / "transport.json").read_text())["kinds"]
        split = transport_split(flower_dir, sorted((flower_root / "site-work").iterdir()), rounds)
        k, model = 3, fl["model_bytes"]
        train = report.get("train", {})
        wire_per_round = (train.get("bytes_down", 0) + train.get("bytes_up", 0)) / max(train.get("exchanges", 1), 1)
        extra = sum(report.get(kind, {}).get("bytes_down", 0) + report.get(kind, {}).get("bytes_up", 0) for kind in ("query.learn_beta_setup", "query.learn_beta_step"))
        flower_round_total = sum(fl["round_s"])
        transport_total = sum(entry["transport_s"] for entry in split.values())
        beta = split.get("query.learn_beta_step")
        row = {
            "scenario": name,
            "config": {"algorithm": algorithm, "params": params, "local_steps": steps, "rounds": rounds, "network": config.model.network},
            "sim_round_s": sim["round_s"],
            "flower_round_s": fl["round_s"],
            "flower_vs_sim_round_time": statistics.mean(fl["round_s"]) / statistics.mean(sim["round_s"]) - 1,
            "transport_overhead_of_round_time": transport_total / flower_round_total,
            "sim_beta_step_s": sim["beta_step_s_median"],
            "flower_beta_message_s": beta["wall_s_per_exchange"] if beta else None,
            "flower_beta_step_s": beta["wall_s_per_exchange"] / params.get("beta_local_steps", 1) if beta else None,
            "flower_beta_step_transport_s": beta["transport_s_per_exchange"] / params.get("beta_local_steps", 1) if beta else None,
            "train_wire_bytes_per_round_vs_2Kmodel": wire_per_round / (2 * k * model),
            "auto_fedavg_extra_vs_fedavg": extra / (wire_per_round * rounds) if extra else None,
            "expected_extra_(K-1)/(2t0)": (k - 1) / (2 * params.get("t0", 1)) if algorithm == "auto-fedavg" else None,
            "per_kind": split,
        }
        table.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_kind"}), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, no GPU", "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv])}
    results = out / "results.json"
    if args.only and results.exists():  # keep the other scenarios' rows, with the run that measured them
        previous = json.loads(results.read_text())
        fresh = {row["scenario"] for row in table}
        kept = [row if "measured_by" in row else dict(row, measured_by=previous["meta"]) for row in previous["rows"] if row["scenario"] not in fresh]
        table = kept + table
    results.write_text(json.dumps({"meta": meta, "rows": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
