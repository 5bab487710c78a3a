"""Helpers for starting clusters of node processes on one machine (tests, benchmarks, and
later `shardb demo` / `shardb up`)."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 the OS just handed out and we released.

    Another process could take one before our node binds it; that small race is accepted for
    local clusters, and a node that cannot bind exits with a clear error.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
