"""leasekeeper: a Python client for the leasekeeper agent's Unix socket protocol
(proto/PROTOCOL.md in the leasekeeper repository). Standard library only.

- LeaderElector: campaign for a lock; on_started_leading / on_stopped_leading /
  on_new_leader callbacks; self-fencing at the tenure's deadline even while the agent is
  silent; ACK after a step-down; reconnects after EOF.
- Client: one connection (banner, HELLO with the MAC, requests, events) for anything else.
"""

import logging

from .client import CLOCK_TOLERANCE_MS, FALLBACK_FRACTION, Client
from .elector import STOP_REASONS, LeaderElector
from .protocol import (DEFAULT_SOCKET, MAX_LINE, AuthError, ConnectionClosed, LeaseKeeperError,
                       Message, ProtocolError, RequestError, default_socket_path, load_key,
                       mac_hex, monotonic, monotonic_ms, parse_line)

__version__ = "0.1.0"

# Warnings and errors go to the "leasekeeper" logger; the app decides where they end up.
logging.getLogger("leasekeeper").addHandler(logging.NullHandler())

__all__ = [
    "LeaderElector", "Client", "Message", "STOP_REASONS", "LeaseKeeperError", "ProtocolError",
    "ConnectionClosed", "AuthError", "RequestError", "load_key", "mac_hex", "parse_line",
    "default_socket_path", "monotonic", "monotonic_ms", "DEFAULT_SOCKET", "MAX_LINE",
    "CLOCK_TOLERANCE_MS", "FALLBACK_FRACTION", "__version__",
]
