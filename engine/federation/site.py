"""``fedseg site``: join a federation with one local dataset.

Validates the site folder (as ``fedseg check-site``), starts Flower's SuperNode as a
child process (the SuperNode cannot run in a thread: it installs signal handlers), and
answers its tasks in this process with the persistent executor, so torch, the network
and the site's preprocessed cases stay loaded for the whole run. Ctrl-C (SIGINT,
SIGTERM, or CTRL_BREAK on Windows) finishes the message in hand, then stops the
SuperNode cleanly; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.data.check import check_site
from engine.errors import FederationError, SiteError
from engine.federation import executor
from engine.federation.launcher import free_port, log_to_file, start_supernode, wait_for_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteSettings:
    superlink: str
    data: Path
    ca: Path
    key: Path
    name: str
    work_dir: Path
    allow_model_sharing: bool = False

    @classmethod
    def make(
        cls,
        superlink: str,
        data: str | Path,
        ca: str | Path,
        key: str | Path,
        *,
        name: str | None = None,
        work_dir: str | Path | None = None,
        allow_model_sharing: bool = False,
    ) -> SiteSettings:
        data, ca, key = Path(data), Path(ca), Path(key)
        if ":" not in superlink:
            raise FederationError(f"--superlink: expected HOST:PORT, got {superlink!r}")
        if not data.is_dir():
            raise SiteError(f"{data}: site folder not found")
        for path, what in ((ca, "CA certificate (--ca)"), (key, "site key (--key)")):
            if not path.is_file():
                raise FederationError(f"{path}: {what} not found")
        name = name or data.name
        work = Path(work_dir) if work_dir else Path.home() / ".fedseg" / "sites" / name
        return cls(superlink, data, ca, key, name, work, allow_model_sharing)


def validate(settings: SiteSettings, lesion_label: int = 1) -> None:
    report = check_site(settings.data, lesion_label=lesion_label)
    if not report.usable:
        files = ", ".join(sorted({f for f, _ in report.problems})) or str(settings.data)
        raise SiteError(f"{settings.data}: site is not usable (run `fedseg check-site {settings.data}`); offending files: {files}")


def node_config(settings: SiteSettings) -> dict[str, object]:
    return {
        "data-path": str(settings.data.resolve()),
        "work-dir": str(settings.work_dir.resolve()),
        "progress-file": str((settings.work_dir / "progress.jsonl").resolve()),
        "allow-model-sharing": settings.allow_model_sharing,
        "site-name": settings.name,
    }


def run_site(settings: SiteSettings, stop: threading.Event | None = None, *, install_signals: bool = True) -> int:
    """Serve until stopped; returns 0 after a clean stop."""
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    log_to_file(settings.work_dir / "site.log", logging.INFO)
    stop = stop or threading.Event()
    port = free_port()
    supernode = start_supernode(
        superlink=settings.superlink,
        ca=settings.ca,
        private_key=settings.key,
        node_config=node_config(settings),
        runtime_port=port,
        log_path=settings.work_dir / "supernode.log",
    )
    if install_signals:
        _install_stop_signals(stop)
    watcher = threading.Thread(target=_watch, args=(supernode, stop), daemon=True)
    watcher.start()
    try:
        wait_for_port("127.0.0.1", port, 60, supernode)
        log.info("site %s: SuperNode up (pid %d), answering tasks", settings.name, supernode.pid)
        executor.serve(f"127.0.0.1:{port}", stop)
    finally:
        code = supernode.stop()
        log.info("site %s: SuperNode stopped (exit %s)", settings.name, code)
    if getattr(stop, "reason", None):
        raise FederationError(f"site {settings.name}: {stop.reason}")  # type: ignore[attr-defined]
    return 0


def _watch(supernode, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        if not supernode.alive:
            why = supernode.last_error() or f"exit code {supernode.popen.returncode}"
            stop.reason = f"the SuperNode stopped: {why} (see {supernode.log_path})"  # type: ignore[attr-defined]
            stop.set()


def _install_stop_signals(stop: threading.Event) -> None:
    def handler(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("stopping after the current message (press Ctrl-C again to stop now)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if sys.platform == "win32":
        signal.signal(signal.SIGBREAK, handler)  # type: ignore[attr-defined]
