"""``fedseg site``: join a federation with one local dataset.

Validates the site folder (as ``fedseg check-site``), starts Flower's SuperNode as a
child process (the SuperNode cannot run in a thread: it installs signal handlers), and
answers its tasks in this process with the persistent executor, so torch, the network
and the site's preprocessed cases stay loaded for the whole run. Ctrl-C (SIGINT,
SIGTERM, or CTRL_BREAK on Windows) finishes the message in hand, then stops the
SuperNode cleanly; a second Ctrl-C stops at once.

Before the SuperNode starts, the SuperLink's certificate is checked against the CA file
(Flower's SuperNode would otherwise retry a failed handshake without saying why). A site
that crashed is let back in by the SuperLink only once its old session's heartbeat has
expired; a site that knows it joined before (``node.json``) waits for that, and rejoins
as the same node. The SuperNode ends with this process, however it ends.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.data.check import check_site
from engine.errors import FederationError, SiteError
from engine.federation import executor
from engine.federation.launcher import ManagedProcess, free_port, log_to_file, start_supernode, wait_for_port
from engine.federation.pki import check_server_certificate, public_key_of, read_public_key
from engine.model.checkpoint import atomic_write_json

log = logging.getLogger(__name__)

IDENTITY_FILE = "node.json"
NODE_ID_LINE = re.compile(r"SuperNode ID: (\d+)")
# Flower counts a node online for 2 heartbeat intervals (2 x 30 s) after its last
# heartbeat; a margin for a slow SuperLink.
REJOIN_WINDOW_S = 75.0
REJOIN_RETRY_S = 2.0


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
    if install_signals:
        _install_stop_signals(stop)
    if not check_server_certificate(settings.superlink, settings.ca):
        log.warning("site %s: the SuperLink at %s does not answer yet; the SuperNode keeps trying", settings.name, settings.superlink)
    port = free_port()
    supernode = _start_activated(settings, port, stop)
    if supernode is None:
        return 0  # stopped while waiting to join
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


def _start_activated(settings: SiteSettings, port: int, stop: threading.Event) -> ManagedProcess | None:
    """Start the SuperNode and wait until the SuperLink has accepted its key.

    A site that crashed (or lost power) cannot say goodbye, so the SuperLink counts its
    node online until two heartbeat intervals have passed, and refuses a second session
    with the same key until then. A site that has joined this SuperLink with this key
    before (``node.json`` in its work dir) therefore retries for up to
    :data:`REJOIN_WINDOW_S`, and gets its old node id back; a key that never joined is
    refused at once.
    """
    identity = SiteIdentity.load(settings)
    started = time.monotonic()
    told = False
    while not stop.is_set():
        log_path = settings.work_dir / "supernode.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        supernode = start_supernode(
            superlink=settings.superlink,
            ca=settings.ca,
            private_key=settings.key,
            node_config=node_config(settings),
            runtime_port=port,
            log_path=log_path,
        )
        node_id = _wait_for_activation(supernode, offset, stop)
        if node_id is not None:
            if identity.node_id not in (None, node_id):
                log.warning("site %s: joined as node %d (was node %d): the coordinator registered the key again", settings.name, node_id, identity.node_id)
            identity.save(node_id)
            log.info("site %s: joined %s as node %d", settings.name, settings.superlink, node_id)
            return supernode
        if stop.is_set():
            supernode.stop()
            return None
        why = supernode.last_error() or f"exit code {supernode.popen.returncode}"
        if "Failed to activate" not in why:
            raise FederationError(f"site {settings.name}: the SuperNode stopped: {why} (see {supernode.log_path})")
        if identity.node_id is None:
            raise FederationError(
                f"site {settings.name}: the SuperLink at {settings.superlink} refused the key {settings.key} ({why}); "
                f"the coordinator must register {public_key_of(settings.key).name} (`fedseg server register`)"
            )
        if time.monotonic() - started > REJOIN_WINDOW_S:
            raise FederationError(
                f"site {settings.name}: the SuperLink at {settings.superlink} still refuses the key {settings.key} after "
                f"{REJOIN_WINDOW_S:g} s ({why}); was it unregistered by the coordinator?"
            )
        if not told:
            log.warning(
                "site %s: the SuperLink still counts this site's previous session (node %d) as online; "
                "it lets the site rejoin once that session's heartbeat expires (up to 60 s after a crash), retrying",
                settings.name,
                identity.node_id,
            )
            told = True
        stop.wait(REJOIN_RETRY_S)
    return None


def _wait_for_activation(supernode: ManagedProcess, offset: int, stop: threading.Event) -> int | None:
    """The node id the SuperNode logs once the SuperLink accepted it; None if it exited."""
    waited_since = time.monotonic()
    while not stop.is_set():
        with supernode.log_path.open("rb") as f:
            f.seek(offset)
            found = NODE_ID_LINE.search(f.read().decode(errors="replace"))
        if found:
            return int(found.group(1))
        if not supernode.alive:
            return None
        if time.monotonic() - waited_since > 30:
            log.warning("still waiting for the SuperLink to accept this site (see %s)", supernode.log_path)
            waited_since = time.monotonic()
        stop.wait(0.1)
    return None


@dataclass
class SiteIdentity:
    """The node id this site last had at a SuperLink with its key (``node.json``)."""

    path: Path
    superlink: str
    key: str
    node_id: int | None = None

    @classmethod
    def load(cls, settings: SiteSettings) -> SiteIdentity:
        path = settings.work_dir / IDENTITY_FILE
        key = read_public_key(public_key_of(settings.key)).decode()
        identity = cls(path, settings.superlink, key)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return identity
        if saved.get("superlink") == settings.superlink and saved.get("key") == key:
            identity.node_id = int(saved["node_id"])
        return identity

    def save(self, node_id: int) -> None:
        self.node_id = node_id
        atomic_write_json(self.path, {"superlink": self.superlink, "key": self.key, "node_id": node_id})


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
