"""A persistent ClientApp executor: one process answers every message of a site.

By default a Flower SuperNode starts ``flower-superexec``, which launches a fresh
``flwr-clientapp`` process per message: Python, torch and MONAI are imported and the
site's cases preprocessed again for every message (seconds each, minutes per round for
Auto-FedAvg's beta steps). With ``flower-supernode --isolation process`` the SuperNode
leaves task execution to an outside process; this is that process. It speaks the
SuperNode's Runtime API exactly as ``flower-superexec`` + ``flwr-clientapp`` do
(AcquireTask -> PullTaskInput -> PushMessages -> PushTaskOutput, with task heartbeats),
but runs the ClientApp in-process, so the :class:`~engine.federation.client_app.SiteService`
and everything it holds survive between messages.
"""

from __future__ import annotations

import logging
import threading
import time

from flwr.app import Error, Message as FlowerMessage
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from engine.errors import FedSegError, Interrupted
from engine.federation import client_app, pulls

log = logging.getLogger(__name__)

FIRST_POLL_S = 0.005  # within HOT_S of a task: the next message of an exchange is near
HOT_S = 5.0
MAX_POLL_S = 0.25  # idle: a loopback call four times a second costs nothing


def _client(address: str, *interceptors, retry: bool = True) -> RuntimeHttpClient:
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,  # the Runtime API listens on loopback only
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), *interceptors],
        retry_invoker=make_simple_http_retry_invoker() if retry else None,
    )


def run_one_task(address: str, token: str) -> tuple[str, dict[str, float]]:
    """Pull the task's message, answer it with the ClientApp, push the reply. Returns the
    message type handled and the seconds spent in each part (pull, app, push, output)."""
    clock = time.perf_counter
    parts: dict[str, float] = {}
    mark = clock()

    def lap(name: str) -> None:
        nonlocal mark
        now = clock()
        parts[name] = now - mark
        mark = now

    client = _client(address, RuntimeTokenHttpInterceptor(token))
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, _run, _fab = pull_task_input(client)
        lap("pull")
        kind = message.metadata.message_type
        try:
            reply = client_app.app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except FedSegError as exc:  # a refusal, a site problem or an operator's stop: one line to the server
            log.log(logging.WARNING if isinstance(exc, Interrupted) else logging.ERROR, "%s: %s", kind, exc)
            reply = FlowerMessage(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(exc)), reply_to=message)
            details = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the server, the site stays up
            log.exception("%s failed", kind)
            reply = FlowerMessage(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)
            details = str(exc)
        lap("app")
        try:
            push_message(client, reply, context)
        except Exception as exc:  # noqa: BLE001 - the SuperNode dropped the message it answers
            # Seen when the coordinator restarts while a site computes: the SuperNode finds
            # the run no longer running and discards the message and its objects. The new
            # coordinator sends its own message; this site must stay up to answer it.
            log.warning("%s: the reply was not taken by the SuperNode (%s: %s); the coordinator asks again if it still needs it", kind, type(exc).__name__, exc)
            status, details = SubStatus.FAILED, "reply not delivered"
        lap("push")
        return kind, parts
    finally:
        try:
            push_task_output(client, context, status, details)
        except Exception as exc:  # noqa: BLE001 - same cause as above; the task is over either way
            log.debug("PushTaskOutput: %s", exc)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
        lap("output")


def serve(address: str, stop: threading.Event | None = None) -> None:
    """Answer tasks from the SuperNode's Runtime API at ``address`` until ``stop`` is set."""
    stop = stop or threading.Event()
    pulls.install()  # a task's arrays may still be on their way to the SuperNode
    client = _client(address, retry=False)  # the loop retries itself, and must notice `stop`
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    poll = FIRST_POLL_S
    last_task = -HOT_S
    try:
        while not stop.is_set():
            try:
                response = client.AcquireTask(request)
            except Exception as exc:  # noqa: BLE001 - the SuperNode may still be starting
                log.debug("AcquireTask: %s", exc)
                stop.wait(0.5)
                continue
            if response.HasField("task") and response.token:
                started = time.perf_counter()
                try:
                    kind, parts = run_one_task(address, response.token)
                except Exception:  # noqa: BLE001 - one failed task must not take the site down
                    log.exception("a task failed before its message could be answered")
                    continue
                log.info(
                    "answered %s in %.2f s (%s)", kind, time.perf_counter() - started, ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
                )
                poll, last_task = FIRST_POLL_S, time.monotonic()
            else:
                stop.wait(poll)
                if time.monotonic() - last_task > HOT_S:  # a beta step's wait for the slowest site stays hot
                    poll = min(MAX_POLL_S, poll * 2)
    finally:
        client.close()
