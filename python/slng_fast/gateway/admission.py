"""Connections that have not been answered yet: a TCP connection whose request head has
not arrived, or whose key has not been checked. They cost a descriptor and a task each
and hold no key's limit, so a flood of idle ones could starve a worker; they are bounded
here, in total and per client address. Past a bound, a new connection is answered 503
with ``Retry-After`` at once and closed, before any of its request is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 53\r\n"
                 b"Connection: close\r\n\r\n"
                 b'{"error":"too_many_pending_connections","retry":true}')


@dataclass
class PendingConnections:
    """Counts of unanswered connections; `admit` before reading a request, `leave` once
    it is answered (upgraded with a checked key, rejected, or gone)."""

    max_total: int = 4096
    max_per_address: int = 256
    on_refused: Callable[[], None] | None = None
    count: int = 0
    by_address: dict[str, int] = field(default_factory=dict)
    refused: int = 0

    def admit(self, address: str) -> bool:
        held = self.by_address.get(address, 0)
        if self.count >= self.max_total or held >= self.max_per_address:
            self.refused += 1
            if self.on_refused is not None:
                self.on_refused()
            return False
        self.count += 1
        self.by_address[address] = held + 1
        return True

    def leave(self, address: str) -> None:
        self.count -= 1
        held = self.by_address.get(address, 1) - 1
        if held > 0:
            self.by_address[address] = held
        else:
            self.by_address.pop(address, None)
