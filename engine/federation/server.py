"""``fedseg server``: host a federation.

A :class:`ServerSession` starts ``flower-superlink`` (TLS, SuperNode authentication,
state database in the run folder), registers the site keys, starts one Flower run of our
ServerApp, and follows it: the ServerApp writes ``events.jsonl``, which the session
tails for progress. Restarting with the same ``--out`` resumes after the last completed
round (the ServerApp finds the checkpoint).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from engine.config import RunConfig
from engine.errors import CheckpointError, ConfigError, FederationError
from engine.events import Event, EventTail, RunFailed, RunFinished
from engine.fl.coordinator import rewind_events
from engine.federation.launcher import ControlClient, ManagedProcess, build_app_bundle, start_superlink, wait_for_port
from engine.federation.pki import Certificates, read_public_key

log = logging.getLogger(__name__)

RUN_KEY_FILE = "run-key"
STATUS_POLL_S = 0.5
# The SuperLink holds nothing a stop could lose (the coordinator checkpoints each round in
# the run folder; its state database is SQLite, safe against a kill), but on SIGINT it
# joins a background thread that waits out the stopped run for about 10 s, and its exit
# handler ignores SIGTERM meanwhile: past this grace it is killed.
SUPERLINK_GRACE_S = 0.5
SUPERLINK_TERM_S = 0.1


def site_key_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pub")) if folder.is_dir() else []


def add_site_key(key_file: str | Path, folder: Path) -> Path:
    """Copy a site's public key into the coordinator's keys folder (validated)."""
    key_file = Path(key_file)
    data = read_public_key(key_file)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (key_file.name if key_file.suffix == ".pub" else key_file.name + ".pub")
    if target.exists() and target.read_bytes().strip() != data:
        raise FederationError(f"{target}: another key of that name is registered; rename the file")
    target.write_bytes(data + b"\n")
    return target


class ServerSession:
    """One coordinator: SuperLink process + Control API + the run it follows."""

    def __init__(self, config: RunConfig, out_dir: Path, certificates: Path, site_keys: Path) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.certs = Certificates(Path(certificates)).check()
        self.site_keys = Path(site_keys)
        self.superlink: ManagedProcess | None = None
        self.control: ControlClient | None = None
        self.run_id: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.config.federation.port}"

    def start(self) -> None:
        if (self.out_dir / "results.json").exists():
            raise CheckpointError(f"{self.out_dir}: holds a finished run; choose another --out")
        keys = site_key_files(self.site_keys)
        if not keys:
            raise FederationError(f"{self.site_keys}: no site keys (*.pub) registered; add them with `fedseg server register KEY.pub`")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fed = self.config.federation
        self.superlink = start_superlink(
            self.certs, host=fed.host, port=fed.port, database=self.out_dir / "superlink.db", log_path=self.out_dir / "superlink.log"
        )
        wait_for_port("127.0.0.1", fed.port, 60, self.superlink)
        self.control = ControlClient(self.address, self.certs.ca)
        self._wait_for_control()
        for key in keys:
            self.control.register_node(read_public_key(key), name=key.stem)
        log.info("SuperLink up on %s:%d with %d registered site key(s)", fed.host, fed.port, len(keys))

    def _wait_for_control(self, timeout_s: float = 60) -> None:
        assert self.control is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.control.ping()
                return
            except Exception as exc:  # noqa: BLE001 - the lifespan may still be starting
                if time.monotonic() > deadline:
                    raise FederationError(f"the SuperLink's Control API does not answer: {exc}") from None
                time.sleep(0.2)

    def register(self, key_file: Path) -> None:
        assert self.control is not None
        self.control.register_node(read_public_key(key_file), name=key_file.stem)

    def start_run(self) -> int:
        assert self.control is not None
        key_file = self.out_dir / RUN_KEY_FILE
        if not key_file.exists():
            key_file.write_text(uuid.uuid4().hex)
        resumed = rewind_events(self.out_dir)  # before the run appends, and before `follow` reads
        if resumed is not None:
            log.info("resuming %s after round %d", self.out_dir, resumed)
        fab = build_app_bundle(self.config, self.out_dir, key_file.read_text().strip())
        self.run_id = self.control.start_run(fab)
        log.info("started Flower run %d", self.run_id)
        return self.run_id

    def next_run(self, config: RunConfig, out_dir: Path) -> int:
        """Start another run on this SuperLink: the sites stay connected (a coordinator
        hosting one experiment after another). Same federation settings, any strategy."""
        if config.federation != self.config.federation:
            raise ConfigError("federation: a run on a running SuperLink keeps its [federation] settings; restart the server to change them")
        if (Path(out_dir) / "results.json").exists():
            raise CheckpointError(f"{out_dir}: holds a finished run; choose another folder")
        self.config, self.out_dir = config, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = None
        return self.start_run()

    def follow(self, on_event: Callable[[Event], None], stop: Callable[[], bool] = lambda: False) -> None:
        """Forward the run's events until it ends; raise FederationError if it failed."""
        assert self.control is not None and self.run_id is not None
        tail = EventTail(self.out_dir / "events.jsonl")
        seen: dict[str, str | bool | None] = {"failure": None, "finished": False}

        def drain() -> None:
            for event in tail.poll():
                on_event(event)
                if isinstance(event, RunFailed):
                    seen["failure"] = event.error
                seen["finished"] = seen["finished"] or isinstance(event, RunFinished)

        while not stop():
            drain()
            if seen["finished"]:
                return
            if self.superlink is not None and not self.superlink.alive:
                raise FederationError(f"the SuperLink exited (code {self.superlink.popen.returncode}); see {self.superlink.log_path}")
            status, sub_status, details = self.control.run_status(self.run_id)
            if status == "finished":
                drain()  # the ServerApp may have written its last lines since
                if seen["finished"] and sub_status == "completed":
                    return
                why = seen["failure"] or details or f"see {self.out_dir / 'superlink.log'}"
                raise FederationError(f"the federated run {sub_status}: {why}")
            _wait_unless(stop, STATUS_POLL_S)
        raise FederationError(f"stopped before the run finished; restart with the same --out ({self.out_dir}) to resume")

    def stop(self) -> None:
        if self.control is not None and self.run_id is not None:
            try:
                if self.control.run_status(self.run_id)[0] != "finished":
                    self.control.stop_run(self.run_id)
            except Exception as exc:  # noqa: BLE001 - best effort while shutting down
                log.debug("stopping run %s: %s", self.run_id, exc)
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.superlink is not None:
            self.superlink.stop(SUPERLINK_GRACE_S, SUPERLINK_TERM_S)
            self.superlink = None


def _wait_unless(stop: Callable[[], bool], seconds: float, step_s: float = 0.05) -> None:
    """Sleep ``seconds``, returning early once ``stop()`` is true (an operator's Stop must
    not wait out a status poll)."""
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(step_s, max(0.0, deadline - time.monotonic())))
