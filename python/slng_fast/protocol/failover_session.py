"""A session's fallback chain (issue 13): the links (the session's own provider, then its
backups), which one serves, and the usage each served. Shared by the TTS and STT
sessions, which decide when to switch and what to send again; the decisions themselves
are pure functions in `protocol.fallback`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slng_fast import errors
from slng_fast.errors import GatewayError
from slng_fast.protocol import events
from slng_fast.protocol.actions import Action, SendClient
from slng_fast.protocol.fallback import Failover, FallbackEntry, next_entry, parse_chain
from slng_fast.vocabulary import Endpoint, Settings


@dataclass
class Link:
    """One provider of a session's chain, with the parameters it is asked with."""

    name: str
    endpoint: Endpoint
    dialect: Any
    settings: Settings = field(default_factory=Settings)
    extras: dict[str, Any] = field(default_factory=dict)  # STT: ``start`` extras


def provider_switched(context_id: str, old: str, new: str, reason: str) -> str:
    return events.encode({"type": "provider_switched", "from": old, "to": new,
                          "reason": reason, "context_id": context_id})


CHAIN_SLOTS = ("_marks", "_served", "chain", "chain_at", "failover")


class ChainMixin:
    """Mixed into `TtsSession` and `SttSession` (which provide ``endpoint``, ``dialect``,
    ``usage``, ``context_id``, ``observations``, ``_fatal``)."""
    # A mixin's slots would clash with SessionCore's layout: its attributes are in the
    # sessions' own slots (`CHAIN_SLOTS`). Hidden from mypy, which would hold the
    # mixin's own assignments to the empty tuple.
    if not TYPE_CHECKING:
        __slots__ = ()

    failover: Failover | None
    chain: list[Link]
    chain_at: int
    endpoint: Endpoint
    dialect: Any
    context_id: str
    observations: list[tuple[str, Any]]
    usage: Any
    upstream_open: bool
    _fatal: Callable[..., list[Action]]  # SessionCore's

    def _init_chain(self) -> None:
        self.failover = None
        self.chain = []
        self.chain_at = 0
        self._served: dict[str, dict[str, float]] = {}
        self._marks = (0.0, 0.0)  # usage (characters, audio_ms) when the current link began

    @property
    def serving(self) -> str:
        """The provider serving the session now."""
        return self.chain[self.chain_at].name if self.chain else self.endpoint.name

    @property
    def has_chain(self) -> bool:
        """A fallback chain is in force (a backup was named)."""
        return len(self.chain) > 1

    def chain_entries(self, raw: Any) -> tuple[FallbackEntry, ...]:
        """The entries asked for (``raw``, else the config's default for the endpoint)."""
        if raw is None:
            return parse_chain(list(self.failover.default_chain)) if self.failover else ()
        entries = parse_chain(raw)
        if entries and self.failover is None:
            raise GatewayError(errors.INVALID_PARAMETER, "this gateway has no fallback")
        return entries

    def resolve_link(self, entry: FallbackEntry) -> tuple[Endpoint, Any]:
        assert self.failover is not None
        if entry.provider == self.endpoint.name:
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"fallback names the session's own provider {entry.provider!r}")
        return self.failover.resolve(entry.provider)

    def chain_names(self) -> list[str]:
        return [link.name for link in self.chain]

    def _begin_link(self, at: int) -> Link:
        """Make ``chain[at]`` the serving link; its usage starts counting."""
        self._fold_usage()
        self.chain_at = at
        link = self.chain[at]
        self.endpoint = link.endpoint
        self.dialect = link.dialect
        return link

    def _fold_usage(self) -> None:
        chars, audio = self._marks
        served = self._served.setdefault(self.serving, {"characters": 0, "audio_ms": 0.0})
        served["characters"] += self.usage.characters - chars
        served["audio_ms"] += self.usage.audio_ms - audio
        self._marks = (self.usage.characters, self.usage.audio_ms)

    def credit_resent(self, characters: int) -> None:
        """Text sent again to the serving provider counts in its share, not the client's."""
        served = self._served.setdefault(self.serving, {"characters": 0, "audio_ms": 0.0})
        served["characters"] += characters

    def provider_usage(self) -> dict[str, dict[str, float]]:
        """Which providers served the session and how much each (the ledger's), in the
        order they began; one skipped before it served anything is not listed."""
        self._fold_usage()
        return {name: {"characters": int(u["characters"]), "audio_ms": round(u["audio_ms"], 3)}
                for name, u in self._served.items()
                if u["characters"] or u["audio_ms"] or name == self.serving}

    def _next_link(self, reason: str, now: float) -> tuple[str, int | None]:
        """The serving provider failed for ``reason``: (its name, the index to move to or
        None when the chain is exhausted). Observed for the health and the metrics."""
        old = self.serving
        self.observations.append(("provider_failed", (old, reason)))
        assert self.failover is not None
        return old, next_entry(self.chain_names(), self.chain_at, self.failover.is_down, now)

    def _switch(self, reason: str, now: float, close: Callable[[], list[Action]],
                move: Callable[[str, int], list[Action]]) -> list[Action]:
        """The serving provider failed for ``reason``: ``close()`` its upstream if open,
        then ``move(old, at)`` to link ``at``; with the chain exhausted, the session ends
        ``provider_unavailable`` (close 1013) instead."""
        old, at = self._next_link(reason, now)
        if at is None:
            return self._exhausted(old, reason, now)
        actions = close() if self.upstream_open else []
        return actions + move(old, at)

    def _switched(self, old: str, reason: str) -> SendClient:
        new = self.serving
        self.observations.append(("provider_switched", (old, new, reason)))
        return SendClient(provider_switched(self.context_id, old, new, reason))

    def _exhausted(self, old: str, reason: str, now: float) -> list[Action]:
        err = GatewayError(errors.PROVIDER_UNAVAILABLE,
                           f"every provider of the session failed ({', '.join(self.chain_names())}"
                           f"; {old}: {reason})")
        fatal: Any = self._fatal
        actions: list[Action] = fatal(err, errors.CLOSE_TRY_AGAIN_LATER, now, reason="error")
        return actions
