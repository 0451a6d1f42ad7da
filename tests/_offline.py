"""A socket guard for the offline tests: every connection attempt raises and is recorded."""

from __future__ import annotations

import socket


class NoNetwork:
    """Make every socket connection raise, and remember the attempts."""

    def __init__(self):
        self.attempts: list[object] = []

    def __enter__(self):
        self.saved = socket.socket.connect, socket.socket.connect_ex

        def refuse(sock, address, *a):
            self.attempts.append(address)
            raise OSError(f"network access attempted in a test: {address}")

        socket.socket.connect = refuse  # type: ignore[method-assign]
        socket.socket.connect_ex = refuse  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc):
        socket.socket.connect, socket.socket.connect_ex = self.saved  # type: ignore[method-assign]
