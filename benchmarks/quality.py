"""Segmentation quality of every baseline on real multi-site CT (the paper's Table 2).

Runs FedAvg, FedAvg-even, FedProx, Local-only, the four Auto-FedAvg variants and every
other method of the source papers (FedBN, Ditto, FedRDN, FedGS, HarmoFL, PRR-FL,
pFL-ResFIM, DEeR with and without DP) on the OpenKBP head-and-neck sites (PTV70 = label 1
as the lesion) at a CPU-sized scale, for several seeds, and writes a markdown table with
the Auto-FedAvg paper's Table 2 columns:
test Dice per site, global test avg +- std over seeds, local avg, local gen, plus DiceS,
DiceL, wall time and bytes. A dagger marks a Wilcoxon signed-rank p < 0.05 against FedAvg
on the paired per-case test Dice (all seeds pooled).

    .venv/bin/python benchmarks/quality.py --out benchmarks/results/quality-openkbp

It is a measurement, not a test: it exits 0 whatever the numbers are.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config import DataConfig, RunConfig, StrategyConfig, TrainConfig
from engine.simulation import load_sites, simulate_sites
from engine.training.metrics import wilcoxon_p

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "openkbp-sites"

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "FedAvg": ("fedavg", {}),  # first: DEeR starts from each seed's FedAvg model
    "FedAvg-even": ("fedavg-even", {}),
    "FedProx": ("fedprox", {"mu": 0.001}),
    "Local only": ("local-only", {}),
    "Auto-FedAvg-L-Softmax": ("auto-fedavg", {"weights": "softmax", "aggregation": "layer"}),
    "Auto-FedAvg-L-Dirichlet": ("auto-fedavg", {"weights": "dirichlet", "aggregation": "layer"}),
    "Auto-FedAvg-N-Softmax": ("auto-fedavg", {"weights": "softmax", "aggregation": "network"}),
    "Auto-FedAvg-N-Dirichlet": ("auto-fedavg", {"weights": "dirichlet", "aggregation": "network"}),
    "FedBN": ("fedbn", {}),
    "Ditto": ("ditto", {"lam": 0.001}),
    "FedRDN": ("fedrdn", {}),
    "FedGS": ("fedgs", {}),
    "HarmoFL": ("harmofl", {}),
    "PRR-FL": ("prrfl", {}),
    "pFL-ResFIM": ("resfim", {}),
    "DEeR (no DP)": ("deer", {"dp": False}),
    "DEeR eps=6": ("deer", {}),
}
#: Methods run on another network than the table's U-Net: FedBN keeps the normalisation
#: parameters at each site, and the default instance norm has none (FedBN = FedAvg there).
MODEL_ARGS: dict[str, dict[str, Any]] = {"FedBN": {"norm": ["instance", {"affine": True}]}}
#: Methods that fine-tune a trained model: they start from the same seed's FedAvg model.
FROM_FEDAVG = {"DEeR (no DP)", "DEeR eps=6"}
PERSONALISED = {"FedBN", "Ditto", "PRR-FL", "pFL-ResFIM"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding site-a, site-b, site-c")
    p.add_argument("--sites", nargs="+", default=["site-a", "site-b", "site-c"])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quality-openkbp")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-steps", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta-steps", type=int, default=5)
    p.add_argument("--beta-lr", type=float, default=0.05)
    p.add_argument("--t0", type=int, default=1)
    p.add_argument("--spacing", type=float, nargs=3, default=[6.0, 6.0, 5.0])
    p.add_argument("--patch", type=int, nargs=3, default=[48, 48, 32])
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="subset of: " + ", ".join(METHODS))
    p.add_argument("--device", default="auto")
    p.add_argument("--keep-runs", action="store_true", help="keep every run folder (models, events)")
    return p.parse_args(argv)


def run_all(args: argparse.Namespace, on_result: Any = None) -> dict[str, list[dict[str, Any]]]:
    data_cfg = DataConfig(lesion_label=1, target_spacing=tuple(args.spacing), patch_size=tuple(args.patch))
    base = RunConfig(rounds=args.rounds, data=data_cfg, train=TrainConfig(lr=args.lr, local_steps=args.local_steps, device=args.device))
    t = time.perf_counter()
    sites = load_sites([args.data / s for s in args.sites], base)
    print(f"loaded {len(sites)} sites in {time.perf_counter() - t:.1f} s", flush=True)
    runs_dir = args.out / "runs"
    results: dict[str, list[dict[str, Any]]] = {}
    for label in args.methods:
        name, params = METHODS[label]
        if name == "auto-fedavg":
            params = {**params, "beta_steps": args.beta_steps, "beta_lr": args.beta_lr, "t0": args.t0}
        for seed in args.seeds:
            out = runs_dir / run_name(label, seed)
            shutil.rmtree(out, ignore_errors=True)
            cfg = replace(base, seed=seed, strategy=StrategyConfig(name, params))
            if label in MODEL_ARGS:
                cfg = replace(cfg, model=replace(cfg.model, args={**cfg.model.args, **MODEL_ARGS[label]}))
            if label in FROM_FEDAVG:
                start = runs_dir / run_name("FedAvg", seed)
                if not (start / "model.json").is_file():
                    raise SystemExit(f"{label} starts from the FedAvg model of seed {seed}: run FedAvg first (--methods FedAvg ...)")
                cfg = replace(cfg, init_model=str(start))
            res = simulate_sites(sites, cfg, out)
            results.setdefault(label, []).append(res)
            print(f"{label:<26} seed {seed}: global {fmt(res.get('global_test_avg'))} local avg {fmt(res['local_avg'])} "
                  f"local gen {fmt(res['local_gen'])} ({res['wall_time_s']:.0f} s)", flush=True)
            if on_result is not None:
                on_result(results)
            if not args.keep_runs:
                shutil.rmtree(out / "site-state", ignore_errors=True)
                shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return results


def run_name(label: str, seed: int) -> str:
    return f"{label.replace(' ', '-').replace('=', '')}-seed{seed}"


def fmt(v: float | None, scale: float = 100.0) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v * scale:.2f}"


def paired(runs: list[dict[str, Any]], site: str | None, key: str = "per_case") -> list[float]:
    """Per-case test Dice of the evaluated model, seeds concatenated in seed order."""
    out: list[float] = []
    for res in runs:
        cases = res.get(key) or {}
        for s, items in sorted(cases.items()):
            if site is None or s == site:
                out.extend(c["dice"] for c in sorted(items, key=lambda c: c["case_id"]))
    return out


def dagger(method_runs: list[dict[str, Any]], ref_runs: list[dict[str, Any]], site: str | None) -> str:
    a, b = paired(method_runs, site), paired(ref_runs, site)
    if not a or len(a) != len(b):
        return ""
    return "†" if wilcoxon_p(a, b) < 0.05 else ""


def table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    sites = args.sites
    ref = results.get("FedAvg")
    head = ["Method", *sites, "global test avg", "local avg", "local gen", "DiceS", "DiceL", "wall time (s)", "MB up+down"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, runs in results.items():
        mean = lambda key: float(np.mean([r[key] for r in runs])) if all(r.get(key) is not None for r in runs) else None  # noqa: E731
        mb = np.mean([(r["communication"]["bytes_up"] + r["communication"]["bytes_down"]) / 1e6 for r in runs])
        wall = np.mean([r["wall_time_s"] for r in runs])
        if label == "Local only":
            # the paper's "Local only I/II/III" rows: site i's best local model on every site
            matrix = np.mean([np.asarray(r["local_matrix"], dtype=float) for r in runs], axis=0)
            for i, site in enumerate(sites):
                row = [f"{fmt(v)}" for v in matrix[i]]
                lines.append(f"| Local only {site} | " + " | ".join(row) + f" | {fmt(float(np.mean(matrix[i])))} | – | – | – | – | | |")
            lines.append(f"| Local-only summary | {' | '.join('–' for _ in sites)} | – | {fmt(mean('local_avg'))} | {fmt(mean('local_gen'))} | – | – | {wall:.0f} | {mb:.1f} |")
            continue
        cells = []
        for site in sites:
            v = float(np.mean([r["per_site_test_dice"][site] for r in runs]))
            mark = dagger(runs, ref, site) if ref is not None and label != "FedAvg" else ""
            cells.append(f"{fmt(v)}{mark}")
        g = [r["global_test_avg"] for r in runs]
        gmark = dagger(runs, ref, None) if ref is not None and label != "FedAvg" else ""
        lines.append(
            f"| {label} | " + " | ".join(cells)
            + f" | {fmt(float(np.mean(g)))}{gmark} ±{float(np.std(g)) * 100:.2f} | {fmt(mean('local_avg'))} | {fmt(mean('local_gen'))}"
            + f" | {fmt(mean('dice_small'))} | {fmt(mean('dice_large'))} | {wall:.0f} | {mb:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    results = run_all(args, on_result=lambda partial: write(args, argv, partial, time.perf_counter() - t, final=False))
    write(args, argv, results, time.perf_counter() - t, final=True)
    return 0


def write(args: argparse.Namespace, argv: list[str] | None, results: dict[str, list[dict[str, Any]]], total: float, *, final: bool) -> None:
    """Write table.md and results.json (after every run, so a stopped benchmark keeps its rows)."""
    command = "python benchmarks/quality.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    md = [
        "# Quality on OpenKBP (PTV70 as the lesion), CPU-sized scale",
        "",
        f"Command: `{command}`",
        "",
        f"Settings: sites {', '.join(args.sites)}; seeds {args.seeds}; {args.rounds} rounds x {args.local_steps} local steps "
        f"(batch 2, patch {args.patch}, spacing {args.spacing} mm, HU window [-160, 240]); Adam lr {args.lr}, betas (0.5, 0.99); "
        f"Dice loss; 3D U-Net 8-16-32-64; FedProx mu 0.001; Auto-FedAvg beta init 6, S = {args.beta_steps}, beta lr {args.beta_lr} (Adam), t0 = {args.t0}.",
        f"Machine: {cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; total {total / 60:.1f} min."
        + ("" if final else f" **Partial: {sum(len(v) for v in results.values())} of {len(args.methods) * len(args.seeds)} runs done.**"),
        "",
        "Dice in %. Site columns: the selected global model (best mean validation Dice) on each site's test set, mean over seeds; "
        "global test avg: mean over sites, ± std over seeds; local avg / local gen: diagonal / off-diagonal mean of the K x K matrix "
        "of best local models. Personalised methods (FedBN, Ditto, PRR-FL, pFL-ResFIM): each site's column is its own personal model "
        "(of its best validation round), global test avg their mean. FedBN runs the U-Net with affine instance norm (the "
        "parameters it keeps local); DEeR fine-tunes the same seed's FedAvg model with LoRA. "
        "† = Wilcoxon signed-rank p < 0.05 against FedAvg on paired per-case test Dice (seeds pooled). "
        "DiceS / DiceL: cases whose lesion fills less / more than 1/400 of the volume. MB: protocol bytes up + down over the run.",
        "",
        table(results, args),
        "",
    ]
    (args.out / "table.md").write_text("\n".join(md))
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if final:
        print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
