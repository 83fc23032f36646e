#!/usr/bin/env python
"""Speed of our local-training step against a bare MONAI/PyTorch loop doing the same work.

"Ours" is :class:`engine.training.trainer.LocalTrainer` called the way a site calls it
(:meth:`engine.fl.site.SiteRuntime.train`: a batch source taking a numpy ``Generator`` and a
per-step ``on_step`` callback). "Bare" is the textbook loop: ``DiceLoss`` + ``Adam``,
zero_grad / forward / loss / backward / step and ``loss.item()`` per step (with autocast +
GradScaler when AMP is on, i.e. on CUDA, exactly as ours).

Both run in one process on the same network object, reset to the same initial weights
before every run, and train on the same pre-drawn patch batches, so the only difference
is the code around the step. Patch sampling (``SiteData.batch``) is drawn once up front
and excluded from both loops; its cost per draw is reported on its own line, because
ours pays it on every step of a real round.

Runs alternate in pairs, and the pairs alternate which loop goes first (ours bare, bare
ours, ours bare, ...: "ABBA"), so that load from other processes on a shared machine, and
any drift in it, hits both sides alike. Each side is summarised by the median seconds per
step over its runs, so single slow runs do not decide the result. The headline is the
ratio of the medians, ours / bare (goal <= 1.05). Printed beside it as cross-checks: the
median of the per-pair ratios, the ratio of single-step medians and the ratio of process
CPU time per step; when one of them falls on the other side of the goal, the verdict says
the measurement is noisy.

Torch runs one intra-op thread unless ``--threads`` says otherwise. On a shared CPU, as many
threads as cores make every step wait for preempted threads: on a busy 2-core machine,
steps were 3-45x slower and varied more than 10-fold from run to run. One thread keeps the
measurement steady. Pass ``--threads 0`` for torch's own choice.

This is a measurement, not a test: it exits 0 whenever it has measured, whether the goal
is met or not, and prints which. Bad arguments exit 2.

Examples::

    python benchmarks/train_step.py                       # phantom site, CPU defaults
    python benchmarks/train_step.py --device cuda --steps 40 --repeats 6
    python benchmarks/train_step.py --site /work/shared/data/openkbp-sites/site-a --spacing 6 6 5
    python benchmarks/train_step.py --markdown benchmarks/results/train_step.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

GOAL = 1.05
DEFAULT_THREADS = torch.get_num_threads()  # before --threads changes it
Batch = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- arguments
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/train_step.py",
        description="Seconds per local-training step: LocalTrainer (ours) vs a bare MONAI/PyTorch loop.",
    )
    p.add_argument("--site", metavar="DIR", help="site folder (MSD layout); default: a synthetic phantom site")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="target spacing in mm (default: DataConfig's)")
    p.add_argument("--patch", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None, help="patch size (default: DataConfig's 48 48 24)")
    p.add_argument("--batch", type=int, default=None, help="patches per step (default: DataConfig's 2)")
    p.add_argument("--network", default="unet", help="registered network name with its default args (default: unet)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (default: 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per loop, also used to check both loops compute the same; 0 leaves first-call costs in the first timed run (default: 3)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs of each loop, alternating; even is best (default: 20)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 0 keeps torch's choice (default: 1, which is steady on a shared CPU)",
    )
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="AMP on CUDA for both loops, as TrainConfig.amp (default: on; no effect on CPU)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="afterwards, run each loop once under torch.profiler and print the top ops")
    p.add_argument("--markdown", metavar="PATH", help="also write the result as a Markdown table to PATH")
    p.add_argument("--append", action="store_true", help="add the table to the end of the --markdown file instead of replacing it")
    args = p.parse_args(argv)
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: must be >= 1")
    if args.threads < 0:
        p.error("--threads: must be >= 0 (0: torch's choice)")
    if args.warmup < 0:
        p.error("--warmup: must be >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available (torch build or machine)")
    from engine.errors import ConfigError
    from engine.model.networks import NETWORKS, total_stride

    try:
        NETWORKS.get(args.network)
    except ConfigError as exc:
        p.error(f"--network: {exc}")
    stride = total_stride(args.network)
    if args.patch and any(x % stride for x in args.patch):
        p.error(f"--patch: every side must be a multiple of {stride} for network '{args.network}'")
    return args


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- data
def load_site(args: argparse.Namespace, data_cfg) -> tuple[object, str]:
    """One site's SiteData: ``--site`` or a freshly written phantom site (temp dir)."""
    from engine.data.loader import SiteData
    from engine.data.site import SiteDataset

    if args.site:
        return SiteData(SiteDataset.open(args.site), data_cfg), str(args.site)
    from engine.data.phantoms import make_demo_sites

    with tempfile.TemporaryDirectory(prefix="fedseg-bench-") as tmp:
        folder = make_demo_sites(Path(tmp), sites=1, seed=args.seed)[0]
        site = SiteData(SiteDataset.open(folder), data_cfg)  # keeps every case in memory
    return site, f"phantom site-1 (make_demo_sites, seed {args.seed})"


def draw_batches(site, n: int, rng: np.random.Generator) -> tuple[list[Batch], list[float]]:
    """``n`` batches exactly as a site draws them, and the seconds each draw took."""
    batches, seconds = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        batches.append(site.batch(rng))
        seconds.append(time.perf_counter() - t0)
    return batches, seconds


# ----------------------------------------------------------------------------- the two loops
def run_ours(trainer, batches: list[Batch], on_step: Callable[[int, int, float], None]) -> None:
    """LocalTrainer.train as SiteRuntime.train calls it (batch source + rng + on_step)."""
    it: Iterator[Batch] = iter(batches)
    trainer.train(lambda rng: next(it), len(batches), np.random.default_rng(0), on_step=on_step)


def run_bare(
    network: nn.Module,
    batches: list[Batch],
    device: torch.device,
    lr: float,
    betas: tuple[float, float],
    amp: bool,
    record: list[float] | None = None,
    stamps: list[float] | None = None,
) -> None:
    """The textbook MONAI/PyTorch loop on the same batches."""
    from monai.losses import DiceLoss

    loss_fn = DiceLoss(to_onehot_y=True, softmax=True, include_background=False)
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, betas=betas)
    # torch's AMP recipe; with enabled=False autocast and the scaler are pass-throughs
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    for image, label in batches:
        image, label = image.to(device), label.to(device)
        optimizer.zero_grad()
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(network(image), label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        value = loss.item()
        if record is not None:
            record.append(value)
        if stamps is not None:
            stamps.append(time.perf_counter())


# ----------------------------------------------------------------------------- measuring
@dataclass
class Result:
    ours: list[float]  # seconds per step, one value per run (run time / steps)
    bare: list[float]
    ours_steps: list[float]  # every single step's seconds, all runs pooled
    bare_steps: list[float]
    ours_cpu: list[float]  # process CPU seconds per step, one value per run
    bare_cpu: list[float]
    draw: list[float]  # seconds per site.batch draw
    loss_diff: float  # max |loss ours - loss bare| over the warm-up steps
    weight_diff: float  # max |w ours - w bare| after the warm-up steps
    load_before: tuple[float, float, float] | None
    load_after: tuple[float, float, float] | None

    @property
    def ours_med(self) -> float:
        return statistics.median(self.ours)

    @property
    def bare_med(self) -> float:
        return statistics.median(self.bare)

    @property
    def ratio(self) -> float:
        return self.ours_med / self.bare_med

    @property
    def pair_ratio(self) -> float:
        return statistics.median(o / b for o, b in zip(self.ours, self.bare))

    @property
    def step_ratio(self) -> float:
        return statistics.median(self.ours_steps) / statistics.median(self.bare_steps)

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(self.ours_cpu) / statistics.median(self.bare_cpu)

    @property
    def draw_med(self) -> float:
        return statistics.median(self.draw)


def loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def max_weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a) if a else 0.0


def measure(args: argparse.Namespace) -> tuple[Result, dict[str, str]]:
    from engine.config import DataConfig, TrainConfig
    from engine.model.networks import build_network
    from engine.training.trainer import LocalTrainer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    data_kw: dict = {}
    if args.spacing:
        data_kw["target_spacing"] = tuple(args.spacing)
    if args.patch:
        data_kw["patch_size"] = tuple(args.patch)
    if args.batch:
        data_kw["batch_size"] = args.batch
    data_cfg = DataConfig(**data_kw)
    train_cfg = TrainConfig(lr=args.lr, amp=args.amp, device=device.type)
    amp = bool(train_cfg.amp and device.type == "cuda")  # what LocalTrainer does

    print("loading site ... ", end="", flush=True)
    t0 = time.perf_counter()
    site, site_desc = load_site(args, data_cfg)
    print(f"{time.perf_counter() - t0:.1f} s ({site.num_train} training cases)", flush=True)

    rng = np.random.default_rng([args.seed, 1])
    warm, _ = draw_batches(site, args.warmup, rng)
    timed, draw_s = draw_batches(site, args.steps, rng)
    draw_s += draw_batches(site, max(0, 20 - args.steps), rng)[1]  # >= 20 draws for the sampling cost

    torch.manual_seed(args.seed)
    network = build_network(args.network).to(device)
    init = copy.deepcopy(network.state_dict())
    trainer = LocalTrainer(network, train_cfg, device)

    def reset() -> None:
        network.load_state_dict(init)
        network.zero_grad(set_to_none=True)

    def noop(step: int, total: int, loss: float) -> None:  # like the site's progress callback
        pass

    stamps: list[float] = []

    def stamp(step: int, total: int, loss: float) -> None:  # receives the values, notes the time
        stamps.append(time.perf_counter())

    # Warm-up (allocator, cuDNN, lazy init) and a check that both loops do the same work.
    loss_diff = weight_diff = float("nan")  # nan: not checked (--warmup 0)
    if warm:
        ours_losses: list[float] = []
        bare_losses: list[float] = []
        reset()
        run_ours(trainer, warm, lambda s, n, loss: ours_losses.append(loss))
        sync(device)
        after_ours = {k: v.detach().clone() for k, v in network.state_dict().items()}
        reset()
        run_bare(network, warm, device, train_cfg.lr, train_cfg.betas, amp, bare_losses)
        sync(device)
        after_bare = {k: v.detach().clone() for k, v in network.state_dict().items()}
        loss_diff = max(abs(a - b) for a, b in zip(ours_losses, bare_losses))
        weight_diff = max_weight_diff(after_ours, after_bare)

    load_before = loadavg()
    ours_s: list[float] = []
    bare_s: list[float] = []
    steps_s: dict[str, list[float]] = {"ours": [], "bare": []}
    cpu_s: dict[str, list[float]] = {"ours": [], "bare": []}
    n = len(timed)
    print(f"timing {args.repeats} x {n} steps per loop, alternating ours/bare (ABBA order) ...", flush=True)
    for r in range(args.repeats):
        # Pairs alternate which loop goes first (ours-bare, bare-ours, ...): neither side always
        # runs right after the other, and a steady drift in machine load cancels out.
        pair = (("ours", ours_s), ("bare", bare_s))
        for name, out in pair if r % 2 == 0 else pair[::-1]:
            reset()
            stamps.clear()
            sync(device)
            c0 = time.process_time()
            t0 = time.perf_counter()
            if name == "ours":
                run_ours(trainer, timed, stamp)
            else:
                run_bare(network, timed, device, train_cfg.lr, train_cfg.betas, amp, stamps=stamps)
            sync(device)
            out.append((time.perf_counter() - t0) / n)
            cpu_s[name].append((time.process_time() - c0) / n)
            steps_s[name] += list(np.diff([t0, *stamps]))
        print(f"  repeat {r + 1}: ours {ours_s[-1] * 1e3:8.1f} ms/step   bare {bare_s[-1] * 1e3:8.1f} ms/step", flush=True)
    load_after = loadavg()

    if args.profile:
        profile(trainer, network, timed, device, train_cfg, amp, reset, noop)

    settings = {
        "site": site_desc,
        "network": f"{args.network} (default args), {sum(p.numel() for p in network.parameters()):,} parameters",
        "patch x batch": f"{'x'.join(map(str, data_cfg.patch_size))} x {data_cfg.batch_size}",
        "spacing (mm)": " x ".join(f"{s:g}" for s in data_cfg.target_spacing),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "AMP": "on (both loops)" if amp else "off",
        "loss / optimiser": f"Dice (softmax, no background) / Adam lr {train_cfg.lr:g}, betas {train_cfg.betas}",
        "steps x repeats": f"{n} timed steps x {args.repeats} runs per loop (+ {len(warm)} warm-up steps)",
    }
    result = Result(
        ours_s, bare_s, steps_s["ours"], steps_s["bare"], cpu_s["ours"], cpu_s["bare"],
        draw_s, loss_diff, weight_diff, load_before, load_after,
    )
    return result, settings


def profile(trainer, network, batches, device, train_cfg, amp, reset, noop) -> None:
    """One run of each loop under torch.profiler; prints the top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    # torch >= 2.4 names the GPU columns "device"; older versions "cuda".
    sorts = ["self_device_time_total", "self_cuda_time_total"] if device.type == "cuda" else ["self_cpu_time_total"]
    for name in ("ours", "bare"):
        reset()
        with tprofile(activities=activities) as prof:
            if name == "ours":
                run_ours(trainer, batches, noop)
            else:
                run_bare(network, batches, device, train_cfg.lr, train_cfg.betas, amp)
            sync(device)
        print(f"\n--- torch.profiler: {name} ({len(batches)} steps) ---")
        for sort in sorts:
            try:
                print(prof.key_averages().table(sort_by=sort, row_limit=15))
                break
            except (AttributeError, KeyError, ValueError):
                continue


# ----------------------------------------------------------------------------- reporting
def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import monai

    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "torch / MONAI / Python": f"{torch.__version__} / {monai.__version__} / {platform.python_version()}",
        "torch threads": f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"
        + f" (torch's default here: {DEFAULT_THREADS})",
    }


def fmt_load(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else " / ".join(f"{x:.2f}" for x in load)


def report(res: Result, settings: dict[str, str], mach: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    met = res.ratio <= GOAL
    verdict = f"goal <= {GOAL:.2f}: {'met' if met else 'not met'}"
    checks = (res.pair_ratio, res.step_ratio, res.cpu_ratio)
    if any((c <= GOAL) != met for c in checks):
        hint = "more --repeats" + (" or --threads 1" if torch.get_num_threads() > 1 else "")
        verdict += f" (noisy: a cross-check disagrees; the per-pair ratio is the most robust; rerun with {hint})"
    ms = lambda xs: ", ".join(f"{x * 1e3:.0f}" for x in xs)  # noqa: E731
    rows = [
        ("ours: LocalTrainer.train, median", f"{res.ours_med * 1e3:.1f} ms/step (runs: {ms(res.ours)})"),
        ("bare: MONAI/PyTorch loop, median", f"{res.bare_med * 1e3:.1f} ms/step (runs: {ms(res.bare)})"),
        ("**ratio ours / bare (medians)**", f"**{res.ratio:.3f}** ({verdict})"),
        ("cross-check: median of per-pair ratios", f"{res.pair_ratio:.3f}"),
        (
            "cross-check: ratio of single-step medians (all steps pooled)",
            f"{res.step_ratio:.3f} ({statistics.median(res.ours_steps) * 1e3:.1f} / {statistics.median(res.bare_steps) * 1e3:.1f} ms)",
        ),
        (
            "cross-check: ratio of process CPU time per step (medians)",
            f"{res.cpu_ratio:.3f} ({statistics.median(res.ours_cpu) * 1e3:.1f} / {statistics.median(res.bare_cpu) * 1e3:.1f} ms)",
        ),
        (
            "patch sampling, one site.batch draw (excluded above)",
            f"{res.draw_med * 1e3:.1f} ms median ({min(res.draw) * 1e3:.1f}-{max(res.draw) * 1e3:.1f}); "
            f"{res.draw_med / res.ours_med:.0%} of ours' step; ours + draw = {(res.ours_med + res.draw_med) * 1e3:.1f} ms per real step",
        ),
        (
            "run-to-run spread, slowest / fastest run",
            f"ours {max(res.ours) / min(res.ours):.2f}x, bare {max(res.bare) / min(res.bare):.2f}x"
            + (" (busy machine: wall times are noisy)" if max(res.ours) / min(res.ours) > 1.5 or max(res.bare) / min(res.bare) > 1.5 else ""),
        ),
        (
            "same work (warm-up check)",
            "not checked (--warmup 0)"
            if math.isnan(res.loss_diff)
            else f"largest loss difference {res.loss_diff:.2e}, largest weight difference {res.weight_diff:.2e}",
        ),
        ("load average (1/5/15 min) before / after timing", f"{fmt_load(res.load_before)} / {fmt_load(res.load_after)}"),
    ]
    return verdict, rows


def print_report(rows: list[tuple[str, str]], settings: dict[str, str], mach: dict[str, str]) -> None:
    print()
    for k, v in {**mach, **settings}.items():
        print(f"{k:>24}: {v}")
    print()
    for k, v in rows:
        print(f"{k.strip('*'):>52}: {v.replace('**', '')}")
    print(
        "\nNote: other processes may share this machine's CPU. Runs alternate ours/bare (in ABBA\n"
        "order) and medians are compared, so load affects both sides alike. Check the per-run values\n"
        "and the load average: a large spread means the machine was busy; rerun with more --repeats\n"
        "or --threads 1 (less hurt by preemption)."
    )


def write_markdown(path: Path, command: str, rows, settings, mach, append: bool = False) -> None:
    append = append and path.is_file()
    lines = [
        *([] if append else ["# Local-training step: ours vs bare MONAI/PyTorch", ""]),
        f"## Run of {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in mach.items()],
        "",
        "| setting | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in settings.items()],
        "",
        "| result | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "Runs alternate ours/bare (pairs in ABBA order) on the same network, reset to the same initial",
        "weights before each run, and the same pre-drawn patch batches. Each side is the median seconds",
        "per step over its runs, so load from other processes on a shared CPU hits both sides alike.",
        "Patch sampling is excluded from both loops and reported on its own row.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    if append:
        text = path.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + text
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    command = shlex.join(["python", "benchmarks/train_step.py", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    res, settings = measure(args)
    mach = machine()
    verdict, rows = report(res, settings, mach)
    print_report(rows, settings, mach)
    if args.markdown:
        write_markdown(Path(args.markdown), command, rows, settings, mach, args.append)
        print(f"\nwrote {args.markdown}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    print(f"ratio ours/bare = {res.ratio:.3f}; {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
