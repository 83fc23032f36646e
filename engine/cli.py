"""``fedseg`` command line.

Every sub-command turns a user mistake (an engine :class:`FedSegError`) into one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, FedSegError

EXIT_USER_ERROR = 2
DEMO_ROUNDS = 5
DEMO_LOCAL_STEPS = 20
DEMO_LR = 3e-3  # CPU-sized demo: 100 local steps in all, so a larger step than the paper's 1e-4
DEMO_BETA_STEPS = 5


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"fedseg: error: {message} (see fedseg {self.prog.split()[-1]} --help)\n")


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedseg", description="FedSeg Studio: federated 3D CT lesion segmentation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sim = sub.add_parser("simulate", help="run K sites in one process and write the run artefacts")
    source = sim.add_mutually_exclusive_group()
    source.add_argument("--sites", nargs="+", metavar="DIR", help="site folders (MSD layout)")
    source.add_argument("--demo", type=int, metavar="K", help="generate K synthetic phantom sites and run on them")
    source.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    sim.add_argument("--config", metavar="TOML", help="run configuration (run.toml)")
    sim.add_argument("--algorithm", help="strategy name (see fedseg algorithms)")
    sim.add_argument("--rounds", type=int)
    sim.add_argument("--local-steps", type=int, help="local iterations M per round")
    sim.add_argument("--t0", type=int, help="auto-fedavg: rounds between weight-learning phases")
    sim.add_argument("--beta-steps", type=int, help="auto-fedavg: beta steps S per phase")
    sim.add_argument("--mu", type=float, help="fedprox: proximal weight")
    sim.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE", help="any strategy parameter, e.g. weights=softmax")
    sim.add_argument("--lr", type=float, help="local learning rate")
    sim.add_argument("--seed", type=int)
    sim.add_argument("--device", choices=["auto", "cpu", "cuda"])
    sim.add_argument("--out", metavar="DIR", help="run folder (default runs/<algorithm>-<time>)")

    pred = sub.add_parser("predict", help="segment a CT with a trained model")
    pred.add_argument("--model", required=True, metavar="DIR", help="folder with model.json and its weights")
    pred.add_argument("--image", required=True, metavar="CT", help="NIfTI/MHA/NRRD file or DICOM folder")
    pred.add_argument("--out", required=True, metavar="MASK", help="output mask (.nii.gz, .nii, .mha, .nrrd)")
    pred.add_argument("--series", metavar="UID", help="DICOM series to use when the folder holds several")
    pred.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    sub.add_parser("algorithms", help="list the federated strategies")

    check = sub.add_parser("check-site", help="validate a site folder and print a report")
    check.add_argument("path", metavar="PATH")
    check.add_argument("--lesion-label", type=int, default=1)

    demo = sub.add_parser("make-demo-sites", help="write K synthetic phantom CT sites")
    demo.add_argument("out", metavar="OUT")
    demo.add_argument("--sites", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    return parser


# -- sub-commands ------------------------------------------------------------------------
def _strategy_params(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    params = dict(base)
    for flag, key in (("t0", "t0"), ("beta_steps", "beta_steps"), ("mu", "mu")):
        value = getattr(args, flag)
        if value is not None:
            params[key] = value
    params.update(dict(args.param))
    return params


def _run_config(args: argparse.Namespace) -> Any:
    from engine.config import RunConfig, StrategyConfig, TrainConfig, load_config

    cfg = load_config(args.config) if args.config else RunConfig()
    if args.demo is not None and not args.config:
        cfg = cfg.replace(
            rounds=DEMO_ROUNDS,
            train=TrainConfig(local_steps=DEMO_LOCAL_STEPS, lr=DEMO_LR),
            strategy=StrategyConfig(cfg.strategy.name, {"beta_steps": DEMO_BETA_STEPS}),
        )
    name = args.algorithm or cfg.strategy.name
    base = dict(cfg.strategy.params) if name == cfg.strategy.name else {}
    params = _strategy_params(args, base)
    if name != "auto-fedavg" and args.demo is not None and not args.config:
        params.pop("beta_steps", None)
    train_changes = {k: v for k, v in (("local_steps", args.local_steps), ("lr", args.lr), ("device", args.device)) if v is not None}
    train = TrainConfig(**{**cfg.train.__dict__, **train_changes})
    changes: dict[str, Any] = {"strategy": StrategyConfig(name, params), "train": train}
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    if args.seed is not None:
        changes["seed"] = args.seed
    return cfg.replace(**changes)


def cmd_simulate(args: argparse.Namespace) -> int:
    from engine.console import ConsoleProgress
    from engine.events import EventBus
    from engine.simulation import resume, simulate

    bus = EventBus()
    bus.subscribe(ConsoleProgress())
    if args.resume:
        _print(f"resuming {args.resume}")
        resume(args.resume, bus=bus)
        return 0
    if args.sites is None and args.demo is None:
        raise ConfigError("simulate: give --sites DIR..., --demo K or --resume DIR")
    cfg = _run_config(args)
    out = Path(args.out or f"runs/{cfg.strategy.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.demo is not None:
        from engine.data.phantoms import make_demo_sites

        if args.demo < 2:
            raise ConfigError(f"--demo: a federation needs at least 2 sites, got {args.demo}")
        _print(f"writing {args.demo} synthetic phantom sites to {out / 'demo-sites'}")
        site_dirs = make_demo_sites(out / "demo-sites", sites=args.demo, seed=cfg.seed)
    else:
        site_dirs = [Path(d) for d in args.sites]
    _print(f"loading {len(site_dirs)} sites (resampling to {cfg.data.target_spacing} mm)")
    try:
        simulate(site_dirs, cfg, out, bus=bus)
    except KeyboardInterrupt:
        if (out / "checkpoint" / "state.json").exists():
            print(f"fedseg: interrupted; continue with: fedseg simulate --resume {out}", file=sys.stderr)
            return 130
        raise
    _print(f"resume an interrupted run with: fedseg simulate --resume {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from engine.io import load_volume, save_mask
    from engine.model.checkpoint import load_model
    from engine.model.inference import predict_volume
    from engine.training.device import resolve_device

    if Path(args.out).resolve() == Path(args.image).resolve():
        raise ConfigError(f"{args.out}: --out is the input CT; choose another file so the image is not overwritten")
    network, card = load_model(args.model)
    volume = load_volume(args.image, series_uid=args.series)
    device = resolve_device(args.device)
    prediction = predict_volume(network.to(device), card, volume, device, on_progress=_print)
    path = save_mask(prediction.mask, volume, args.out)
    _print(f"wrote {path}: lesion volume {prediction.lesion_ml:.2f} mL ({prediction.lesion_voxels} voxels)")
    return 0


def cmd_algorithms(args: argparse.Namespace) -> int:
    from engine.fl import STRATEGIES

    width = max(len(n) for n in STRATEGIES.names())
    for name in STRATEGIES.names():
        _print(f"{name:<{width}}  {STRATEGIES.summary(name)}")
    return 0


def cmd_check_site(args: argparse.Namespace) -> int:
    from engine.data.check import check_site
    from engine.errors import SiteError

    if not Path(args.path).is_dir():
        raise SiteError(f"{args.path}: site folder not found")
    report = check_site(args.path, lesion_label=args.lesion_label)
    _print(report.format())
    if not report.usable:
        files = ", ".join(sorted({f for f, _ in report.problems})) or args.path
        print(f"fedseg: error: {args.path}: site is not usable; offending files: {files}", file=sys.stderr)
        return 1
    return 0


def cmd_make_demo_sites(args: argparse.Namespace) -> int:
    from engine.data.phantoms import make_demo_sites

    if args.sites < 1:
        raise ConfigError(f"--sites: must be >= 1, got {args.sites}")
    for folder in make_demo_sites(Path(args.out), sites=args.sites, seed=args.seed):
        _print(str(folder))
    return 0


COMMANDS = {
    "simulate": cmd_simulate,
    "predict": cmd_predict,
    "algorithms": cmd_algorithms,
    "check-site": cmd_check_site,
    "make-demo-sites": cmd_make_demo_sites,
}


def _print(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except FedSegError as exc:
        print(f"fedseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
