"""Starting and stopping Flower's processes, and talking to the SuperLink's Control API.

* :func:`start_superlink`: ``flower-superlink`` with TLS, SuperNode authentication, a
  state database, runtime dependency installation off, telemetry and update checks off.
* :func:`start_supernode`: Flower's SuperNode (see :mod:`engine.federation.supernode`)
  in ``--isolation process`` mode, with the site's data path, work dir and progress file
  in ``--node-config``; :mod:`engine.federation.executor` answers its tasks.
* :class:`ControlClient`: registering site keys and starting a run (a Flower App Bundle
  built in memory whose components are our ServerApp and ClientApp; with dependency
  installation off the installed ``engine`` package is what runs).

Child processes get their own process group (a new console group on Windows) so that
Ctrl-C reaches the parent first, which then stops them in order: SIGINT
(CTRL_BREAK_EVENT on Windows), then terminate, then kill.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import tomli_w

from engine.config import RunConfig
from engine.errors import FederationError
from engine.federation.pki import Certificates
from engine.federation.programs import check_flower_programs, flower_env, python_module
from engine.federation.records import OUT_KEY, RUN_CONFIG_KEY, RUN_KEY
from engine.federation.supernode import TIED_ENV

FLOWER_VERSION = "1.41.0"
WINDOWS = sys.platform == "win32"


def log_to_file(path: Path, level: int = logging.DEBUG) -> None:
    """The engine's log of this process, appended to ``path`` (operators read it)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    engine_log = logging.getLogger("engine")
    engine_log.addHandler(handler)
    engine_log.setLevel(min(level, engine_log.getEffectiveLevel()))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, process: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and not process.alive:
            raise FederationError(f"{process.name} exited with code {process.popen.returncode}; see {process.log_path}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise FederationError(f"nothing listens on {host}:{port} after {timeout_s:g} s")


class ManagedProcess:
    """A child process with its output in a log file, stopped gently then firmly."""

    def __init__(
        self, name: str, command: Sequence[str], log_path: Path, env: dict[str, str] | None = None, *, tied: bool = False
    ) -> None:
        """``tied``: the child gets a pipe as stdin that only this process holds; a child
        that watches it (:func:`stop_when_parent_dies`) ends when this process dies."""
        self.name = name
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = self.log_path.open("ab")
        flags: dict[str, Any] = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if WINDOWS else {"start_new_session": True}
        )
        env = dict(env or flower_env())
        if tied:
            env[TIED_ENV] = "1"
        stdin = subprocess.PIPE if tied else subprocess.DEVNULL
        self.popen = subprocess.Popen(list(command), stdin=stdin, stdout=self._log, stderr=subprocess.STDOUT, env=env, **flags)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 10.0, term_s: float = 5.0) -> int | None:
        """SIGINT (the process's own clean exit), after ``grace_s`` SIGTERM, after
        ``term_s`` more SIGKILL; then whatever its process group left behind."""
        if self.alive:
            try:
                if WINDOWS:
                    self.popen.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
                else:
                    os.killpg(self.popen.pid, signal.SIGINT)
                self.popen.wait(grace_s)
            except (subprocess.TimeoutExpired, ProcessLookupError, OSError):
                self.popen.terminate()
                try:
                    self.popen.wait(term_s)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait()
        self._end_leftovers()
        self._close()
        return self.popen.returncode

    def _end_leftovers(self) -> None:
        """Children the process started and left behind (the SuperLink's ``flwr-serverapp``
        outlives it, retrying its calls for minutes) share its process group: end them."""
        if WINDOWS:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in the group

    def _close(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        self._log.close()

    def last_error(self) -> str | None:
        """The last line of the log that says what failed (Flower's exit messages)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return None
        found = [line.strip() for line in lines if "[code:" in line or line.startswith("Failed")]
        return found[-1] if found else None

    def kill(self) -> None:
        """Like a crash or a power cut: no clean-up at all (fault tests)."""
        if self.alive:
            if WINDOWS:
                self.popen.kill()
            else:
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._close()


def start_superlink(certs: Certificates, *, host: str, port: int, database: Path, log_path: Path) -> ManagedProcess:
    """``flower-superlink``: Fleet, Control and Runtime APIs on ``host:port`` (HTTPS), tied to
    this process (:mod:`engine.federation.superlink`: it ends if this process dies)."""
    certs.check()
    check_flower_programs()  # the SuperLink starts them by name
    command = python_module(
        "engine.federation.superlink",
        "--ssl-ca-certfile", str(certs.ca),
        "--ssl-certfile", str(certs.server_cert),
        "--ssl-keyfile", str(certs.server_key),
        "--enable-supernode-auth",
        "--database", str(database),
        "--disable-runtime-dependency-installation",
        "--host", host,
        "--port", str(port),
    )  # fmt: skip
    return ManagedProcess("flower-superlink", command, log_path, tied=True)


def start_supernode(
    *,
    superlink: str,
    ca: Path,
    private_key: Path,
    node_config: dict[str, Any],
    runtime_port: int,
    log_path: Path,
) -> ManagedProcess:
    """Flower's SuperNode for one site; its tasks are answered by our executor on
    ``127.0.0.1:runtime_port``."""
    config = " ".join(f"{key}={json.dumps(value)}" for key, value in node_config.items())
    command = python_module(
        "engine.federation.supernode",
        "--superlink", superlink,
        "--root-certificates", str(ca),
        "--auth-supernode-private-key", str(private_key),
        "--isolation", "process",
        "--host", "127.0.0.1",
        "--port", str(runtime_port),
        "--node-config", config,
    )  # fmt: skip  (a SuperNode installs no dependencies unless told to)
    return ManagedProcess(f"flower-supernode ({node_config.get('site-name', '?')})", command, log_path, tied=True)


def build_app_bundle(config: RunConfig, out_dir: Path, run_key: str) -> bytes:
    """A Flower App Bundle naming our ServerApp/ClientApp, the run's settings in its
    ``[tool.flwr.app.config]``."""
    from flwr.cli.build import build_fab_from_files

    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "fedseg-run",
            "version": "1.0.0",
            "description": "FedSeg Studio federated run",
            "license": "Apache-2.0",
            "dependencies": [f"flwr=={FLOWER_VERSION}"],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedseg-studio",
                    "components": {
                        "serverapp": "engine.federation.server_app:app",
                        "clientapp": "engine.federation.client_app:app",
                    },
                    "config": {
                        RUN_CONFIG_KEY: json.dumps(config.to_dict()),
                        OUT_KEY: str(Path(out_dir).resolve()),
                        RUN_KEY: run_key,
                    },
                }
            }
        },
    }
    fab, _ = build_fab_from_files({"pyproject.toml": tomli_w.dumps(pyproject).encode()})
    return fab


class ControlClient:
    """The SuperLink's Control API, over HTTPS on loopback."""

    def __init__(self, address: str, ca: Path) -> None:
        from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
        from flwr.supercore.control.control_http_client import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        self._client = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=False,
            root_certificates=str(ca),
            interceptors=[CliClientHttpInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def close(self) -> None:
        self._client.close()

    def ping(self) -> None:
        """Raises unless the Control API answers."""
        from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=E0611

        self._client.ListRuns(ListRunsRequest())

    def register_node(self, public_key: bytes, name: str | None = None) -> int:
        """Register a site's OpenSSH public key (sent as PEM, as ``flwr supernode register`` does)."""
        from cryptography.hazmat.primitives import serialization
        from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611

        pem = serialization.load_ssh_public_key(public_key).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        import httpx
        from flwr.supercore.error import ApiErrorCode, FlowerError

        try:
            response = self._client.RegisterNode(RegisterNodeRequest(public_key=pem, name=name))
        except httpx.HTTPStatusError as exc:
            error = FlowerError.from_json(exc.response.text)
            if error is not None and error.code == ApiErrorCode.PUBLIC_KEY_ALREADY_IN_USE:
                return 0  # registered before (a restarted coordinator keeps its state database)
            why = f"{error.message} (code {error.code})" if error is not None else str(exc)
            raise FederationError(f"the SuperLink refused the site key{f' of {name}' if name else ''}: {why}") from None
        return int(response.node_id)

    def start_run(self, fab: bytes) -> int:
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest  # pylint: disable=E0611
        from flwr.supercore.fab import Fab

        request = StartRunRequest(
            fab=fab_to_proto(Fab(hashlib.sha256(fab).hexdigest(), fab, {})),
            override_config=user_config_to_proto({}),
            federation="",
        )
        response = self._client.StartRun(request)
        if not response.HasField("run_id"):
            raise FederationError("the SuperLink did not start the run")
        return int(response.run_id)

    def run_status(self, run_id: int) -> tuple[str, str, str]:
        """(status, sub_status, details) of a run, e.g. ("finished", "failed", "...")."""
        from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=E0611

        run = self._client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
        return run.status.status, run.status.sub_status, run.status.details

    def stop_run(self, run_id: int) -> None:
        from flwr.proto.control_pb2 import StopRunRequest  # pylint: disable=E0611

        self._client.StopRun(StopRunRequest(run_id=run_id))
