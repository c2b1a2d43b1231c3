"""The cloud providers' own voice listings for ``GET /v1/voices``: fetched over HTTP (httpx
on trio) for each provider that has a key configured, kept for a while, and never
allowed to hold the catalogue up for long. The requests and parsers are sans-I/O
(``providers/voice_lists.py``); this is the thin I/O around them.

A listing is fetched when a catalogue request finds none fresh (the first request, then
after the TTL), every stale provider at once, each within one timeout. A failure (no
answer in time, a refused connection, an HTTP error, an answer of another shape) gives
no listing, so the catalogue shows the documented voices, marked ``documented``; it is
kept for at most ``FAILURE_TTL_S`` so a provider that is down does not slow every
request, and logged once until the provider answers again."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import trio

from slng_fast.errors import GatewayError
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.providers.voice_lists import LISTINGS, Listing, rest_base

log = logging.getLogger("slng_fast.gateway.voices")

FAILURE_TTL_S = 60.0
MAX_PAGES = 10


@dataclass
class _Entry:
    voices: list[dict[str, Any]] | None = None  # None: the last fetch failed
    fetched_at: float = -float("inf")
    failing: bool = False  # a failure was logged and the provider has not answered since
    lock: trio.Lock = field(default_factory=trio.Lock)


class ListingFailed(Exception):
    pass


class ProviderVoices:
    """The cache of one gateway process, by provider, upstream URL and key (a changed
    key or URL is a new listing)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], _Entry] = {}

    async def lookup(self, registry: ProviderRegistry, *, ttl: float, timeout: float,
                     only: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """The voices each keyed cloud provider listed (``only``: that one), by endpoint
        name; a provider without a key or whose listing failed is left out."""
        wanted = []
        for endpoint in registry.endpoints():
            listing = LISTINGS.get(endpoint.name)
            if listing is None or only not in (None, endpoint.name):
                continue
            try:
                url, key = registry.upstream(endpoint)
            except GatewayError:
                continue
            if key:
                wanted.append((endpoint.name, endpoint.sample_rate, listing, url, key))
        found: dict[str, list[dict[str, Any]]] = {}
        async with trio.open_nursery() as nursery:
            for args in wanted:
                nursery.start_soon(self._one, found, *args, ttl, timeout)
        return found

    async def _one(self, found: dict[str, list[dict[str, Any]]], name: str, rate: int,
                   listing: Listing, url: str, key: str, ttl: float, timeout: float) -> None:
        cache_key = (name, url, hashlib.sha256(key.encode()).hexdigest())
        entry = self._entries.setdefault(cache_key, _Entry())
        # Callers that arrive during a fetch wait for it (bounded by its timeout).
        async with entry.lock:
            age = trio.current_time() - entry.fetched_at
            if age >= (ttl if entry.voices is not None else min(ttl, FAILURE_TTL_S)):
                await self._fetch(entry, name, rate, listing, url, key, timeout)
        if entry.voices is not None:
            found[name] = entry.voices

    async def _fetch(self, entry: _Entry, name: str, rate: int, listing: Listing, url: str,
                     key: str, timeout: float) -> None:
        problem = None
        with trio.move_on_after(timeout) as scope:
            try:
                entry.voices = await fetch(listing, rest_base(url), key, rate, timeout)
            except Exception as exc:  # whatever it is, the documented voices are listed
                problem = f"{type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            problem = f"no answer within {timeout:g} s"
        entry.fetched_at = trio.current_time()
        if problem is None:
            if entry.failing:
                log.info("%s's voice list is fetched again", name)
            entry.failing = False
            return
        entry.voices = None
        if not entry.failing:
            entry.failing = True
            where = urlsplit(rest_base(url))
            log.warning("cannot fetch %s's voice list from %s://%s (%s); listing its "
                        "documented voices until it answers", name, where.scheme,
                        where.netloc.rpartition("@")[2], problem)


async def fetch(listing: Listing, base: str, key: str, sample_rate: int,
                timeout: float) -> list[dict[str, Any]]:
    """Every page of one provider's listing, as catalogue voices."""
    voices: list[dict[str, Any]] = []
    cursor = None
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for _ in range(MAX_PAGES):
            request = listing.request(base, key, cursor)
            response = await client.get(request.url, headers=list(request.headers))
            if response.status_code != 200:
                raise ListingFailed(f"HTTP {response.status_code}")
            page = listing.parse(orjson.loads(response.content), sample_rate)
            voices += page.voices
            cursor = page.cursor
            if cursor is None:
                break
    return voices
