"""Real federation over Flower: the only package that imports ``flwr``.

* :mod:`.server_app` / :mod:`.client_app`: our ServerApp (runs the transport-agnostic
  :class:`~engine.fl.coordinator.Coordinator`) and ClientApp (dispatches to the
  strategies' own site logic);
* :mod:`.transport` / :mod:`.records`: strategy messages as Flower Messages;
* :mod:`.executor` / :mod:`.supernode`: a persistent ClientApp process, and the SuperNode
  tuned for short exchanges;
* :mod:`.launcher` / :mod:`.server` / :mod:`.site` / :mod:`.demo`: processes and commands;
* :mod:`.pulls`: Flower's object pulls with a back-off sized for loopback and LAN;
* :mod:`.pki`: CA, server certificate and site keys.
"""

import os

# Before flwr is imported anywhere in this process: no telemetry, no update checks.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
