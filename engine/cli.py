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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.errors import ConfigError, FedSegError

EXIT_USER_ERROR = 2
DEMO_ROUNDS = 5
DEMO_LOCAL_STEPS = 20
DEMO_LR = 3e-3  # CPU-sized demo: 100 local steps in all, so a larger step than the paper's 1e-4
DEMO_BETA_STEPS = 5


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = " ".join(self.prog.split()[1:])  # "" for the top level, "server register", ...
        self.exit(EXIT_USER_ERROR, f"fedseg: error: {message} (see {' '.join(['fedseg', command, '--help']).replace('  ', ' ')})\n")


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


Command = Callable[[argparse.Namespace], int]


class Extension(Protocol):
    """A sub-command defined outside the engine (the desktop app's ``gui``): the engine's
    command line stays free of Qt, and the app adds itself when it is installed."""

    name: str

    def add_parser(self, sub: Any) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class _VersionAction(argparse.Action):
    """``fedseg --version``: this program's, torch's (and its CUDA) and Flower's versions, the
    first thing support asks of an installation. Computed only when asked: importing torch takes a second."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None) -> None:  # noqa: A002
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        import torch

        import engine

        try:
            flower = version("flwr")
        except PackageNotFoundError:
            flower = "not installed"
        cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        from engine.federation.programs import frozen as installed_folder

        frozen = ", installed folder" if installed_folder() else ""
        print(f"fedseg {engine.__version__} (torch {torch.__version__}, {cuda}; Flower {flower}; Python {sys.version.split()[0]}{frozen})")
        parser.exit()


def build_parser(extensions: Sequence[Extension] = ()) -> argparse.ArgumentParser:
    parser = _Parser(prog="fedseg", description="FedSeg Studio: federated 3D CT lesion segmentation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine details to stderr")
    parser.add_argument("--version", action=_VersionAction, help="show the versions of fedseg, torch (CUDA) and Flower, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for extension in extensions:
        extension.add_parser(sub)

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
    sim.add_argument(
        "--init-model", metavar="DIR", help="start from a trained model folder (model.json + weights; deer needs one)"
    )
    sim.add_argument("--device", choices=["auto", "cpu", "cuda"])
    sim.add_argument("--out", metavar="DIR", help="run folder (default runs/<algorithm>-<time>)")

    pred = sub.add_parser("predict", help="segment a CT with a trained model")
    pred.add_argument("--model", required=True, metavar="DIR", help="folder with model.json and its weights")
    pred.add_argument("--image", required=True, metavar="CT", help="NIfTI/MHA/NRRD file or DICOM folder")
    pred.add_argument("--out", required=True, metavar="MASK", help="output mask (.nii.gz, .nii, .mha, .nrrd)")
    pred.add_argument("--series", metavar="UID", help="DICOM series to use when the folder holds several")
    pred.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    sub.add_parser("algorithms", help="list the federated strategies")

    certs = sub.add_parser("certs", help="make a CA and the coordinator's TLS certificate")
    certs.add_argument("out", metavar="OUT", help="folder for ca.pem, ca.key, server.pem, server.key")
    certs.add_argument("--host", nargs="+", required=True, metavar="NAME", help="names/addresses sites use to reach the coordinator")
    certs.add_argument("--force", action="store_true", help="replace existing files")

    key = sub.add_parser("site-key", help="make a site's key pair (OUT and OUT.pub)")
    key.add_argument("out", metavar="OUT")
    key.add_argument("--force", action="store_true", help="replace existing files")

    server = sub.add_parser("server", help="host a federation: SuperLink + the configured strategy")
    server.add_argument("--config", metavar="TOML", help="run configuration with a [federation] section")
    server.add_argument("--out", metavar="DIR", help="run folder (default: run/ beside the config); the same folder resumes")
    server_sub = server.add_subparsers(dest="server_command", metavar="ACTION", parser_class=_Parser)
    register = server_sub.add_parser("register", help="register a site's public key (KEY.pub)")
    register.add_argument("key", metavar="KEY.pub")
    register.add_argument("--config", dest="register_config", metavar="TOML")

    site = sub.add_parser("site", help="join a federation with a local site folder")
    site.add_argument("--superlink", required=True, metavar="HOST:PORT")
    site.add_argument("--data", required=True, metavar="SITE_DIR")
    site.add_argument("--ca", required=True, metavar="CA.pem")
    site.add_argument("--key", required=True, metavar="SITE.key", help="private key from fedseg site-key (SITE.key.pub beside it)")
    site.add_argument("--name", help="site name shown to the federation (default: the folder name)")
    site.add_argument("--work-dir", metavar="DIR", help="site state and logs (default ~/.fedseg/sites/NAME)")
    site.add_argument("--allow-model-sharing", action="store_true", help="accept runs that send this site other sites' models (Auto-FedAvg)")
    site.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; lower it when sites share a machine)")

    demo_fl = sub.add_parser("demo", help="a whole federation on this machine over Flower (3 phantom sites)")
    demo_fl.add_argument("--headless", action="store_true", help="progress on the terminal (the app, `fedseg gui`, has the same demo under Federation > Demo)")
    demo_fl.add_argument("--algorithm", default="auto-fedavg")
    demo_fl.add_argument("--rounds", type=int, default=DEMO_ROUNDS)
    demo_fl.add_argument("--out", metavar="DIR", help="default runs/flower-demo-<time>")

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
    return _with_init_model(cfg.replace(**changes), args.config, args.init_model)


def _with_init_model(cfg: Any, config_path: str | None, given: str | None = None) -> Any:
    """``init_model`` made absolute (``--init-model`` relative to the current folder, a
    config's value relative to the config's folder) and checked now, before sites load."""
    if given is None and cfg.init_model is None:
        return cfg
    from engine.fl.coordinator import load_init_model

    path = Path(given) if given is not None else _config_folder_path(config_path, cfg.init_model)
    cfg = cfg.replace(init_model=str(path.resolve()))
    load_init_model(cfg)
    return cfg


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


def _config_folder_path(config_path: str | None, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() or not config_path else Path(config_path).parent / path


def cmd_certs(args: argparse.Namespace) -> int:
    from engine.federation.pki import make_certificates

    certs = make_certificates(args.out, args.host, overwrite=args.force)
    _print(f"wrote {certs.ca} (give it to every site), {certs.server_cert} and {certs.server_key}; keep {certs.folder / 'ca.key'} offline")
    return 0


def cmd_site_key(args: argparse.Namespace) -> int:
    from engine.federation.pki import make_site_key

    private, public = make_site_key(args.out, overwrite=args.force)
    _print(f"wrote {private} (stays at the site) and {public} (send it to the coordinator)")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from engine.config import RunConfig, load_config
    from engine.console import ConsoleProgress
    from engine.federation.server import ServerSession, add_site_key

    config_path = args.register_config if args.server_command == "register" and args.register_config else args.config
    cfg = load_config(config_path) if config_path else RunConfig()
    keys = _config_folder_path(config_path, cfg.federation.site_keys)
    if args.server_command == "register":
        target = add_site_key(args.key, keys)
        _print(f"registered {target}; it takes effect when the server (re)starts")
        return 0
    out = Path(args.out) if args.out else _config_folder_path(config_path, "run")
    cfg = _with_init_model(cfg, config_path)
    session = ServerSession(cfg, out, _config_folder_path(config_path, cfg.federation.certificates), keys)
    try:
        session.start()
        _print(f"coordinator listening on {cfg.federation.host}:{cfg.federation.port}; waiting for {cfg.federation.sites} sites")
        session.start_run()
        session.follow(ConsoleProgress())
    finally:
        session.stop()
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from engine.federation.site import SiteSettings, run_site, validate

    settings = SiteSettings.make(
        args.superlink, args.data, args.ca, args.key, name=args.name, work_dir=args.work_dir, allow_model_sharing=args.allow_model_sharing
    )
    validate(settings)
    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))
    _print(f"site {settings.name}: {settings.data} is valid; joining {settings.superlink} (Ctrl-C to leave)")
    code = run_site(settings)
    _print(f"site {settings.name}: stopped")
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.config import RunConfig, StrategyConfig, TrainConfig
    from engine.console import ConsoleProgress
    from engine.federation.demo import run_demo
    from engine.fl import STRATEGIES

    STRATEGIES.get(args.algorithm)
    params = {"beta_steps": DEMO_BETA_STEPS} if args.algorithm == "auto-fedavg" else {}
    cfg = RunConfig(rounds=args.rounds, train=TrainConfig(local_steps=DEMO_LOCAL_STEPS, lr=DEMO_LR), strategy=StrategyConfig(args.algorithm, params))
    out = Path(args.out or f"runs/flower-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    run_demo(cfg, out, ConsoleProgress(), say=_print)
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
    "certs": cmd_certs,
    "site-key": cmd_site_key,
    "server": cmd_server,
    "site": cmd_site,
    "demo": cmd_demo,
    "make-demo-sites": cmd_make_demo_sites,
}


def _print(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None, *, extensions: Sequence[Extension] = (), default: str | None = None) -> int:
    """Run ``fedseg ARGV``; ``extensions`` add sub-commands, ``default`` is the one run
    when none is given (the app's ``gui``; without it, the help is printed)."""
    parser = build_parser(extensions)
    argv = list(sys.argv[1:] if argv is None else argv)
    if default is not None and not [a for a in argv if not a.startswith("-")] and not {"-h", "--help"} & set(argv):
        argv.append(default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    commands: dict[str, Command] = {**COMMANDS, **{e.name: e.run for e in extensions}}
    try:
        return commands[args.command](args)
    except FedSegError as exc:
        print(f"fedseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
