"""The gateway service: route and authenticate each WebSocket, enforce the per-key
connection limit, write the usage ledger, run the session, end the sessions of revoked
keys, and shut down gracefully."""

from __future__ import annotations

import hmac
import logging
import math
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import trio

from slng_fast import errors
from slng_fast.catalogue import UnknownProvider, catalogue
from slng_fast.config import Config, ConfigError
from slng_fast.errors import GatewayError
from slng_fast.gateway.admission import PendingConnections
from slng_fast.gateway.bridge import SessionBridge
from slng_fast.gateway.event_hooks import when_set
from slng_fast.gateway.health import HealthWatch
from slng_fast.gateway.ledger import Ledger, OpenSession
from slng_fast.gateway.native_transport import open_native_upstream, serve_native_websocket
from slng_fast.gateway.openai_routes import OpenAiRoutes, serve_models
from slng_fast.gateway.openai_speech import serve_speech
from slng_fast.gateway.openai_transcriptions import serve_transcription
from slng_fast.gateway.playground import answer as playground_answer
from slng_fast.gateway.provider_voices import ProviderVoices
from slng_fast.gateway.revocation import RevocationWatch
from slng_fast.gateway.routing import Route, find_key, parse_path, redact
from slng_fast.gateway.session_timer import current_deadlines
from slng_fast.gateway.shared_limits import SharedLimits
from slng_fast.gateway.transport import (
    Awoken,
    Connection,
    ConnectionClosed,
    IncomingRequest,
    open_upstream,
    serve_trio_websocket,
)
from slng_fast.gateway.warm_pool import WarmPool
from slng_fast.limits import LocalLimits
from slng_fast.metrics import Metrics
from slng_fast.protocol import events
from slng_fast.protocol.fallback import Failover
from slng_fast.protocol.openai_realtime import (
    BETA,
    GA,
    RealtimeTranscription,
    error_event,
)
from slng_fast.protocol.realtime_session import RealtimeSttSession
from slng_fast.protocol.stt import SttSession
from slng_fast.protocol.tts import TtsSession
from slng_fast.providers import registry as reg
from slng_fast.store import STORE_ERRORS, ApiKey, StoreBackend
from slng_fast.vocabulary import Endpoint, Settings

log = logging.getLogger("slng_fast.gateway")

# The key store's failures and the limits backend's (RedisUnavailable is an OSError).
_BACKEND_ERRORS: tuple[type[Exception], ...] = (*STORE_ERRORS, OSError)


@dataclass
class Gateway:
    """Everything the sessions of one gateway process share."""

    config: Config
    store: StoreBackend
    registry: reg.ProviderRegistry
    limits: LocalLimits | SharedLimits = field(default_factory=LocalLimits)
    shutdown: trio.Event = field(default_factory=trio.Event)
    # Set on SIGTERM with a drain period: no new sessions, those in flight finish.
    draining: trio.Event = field(default_factory=trio.Event)
    active: int = 0
    idle: trio.Event = field(default_factory=trio.Event)
    metrics: Metrics = field(default_factory=Metrics)
    transport: str = "native"  # the frame layer of upstream connections too
    pending: PendingConnections = field(default_factory=PendingConnections)
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ledger: Ledger = field(init=False)
    health: HealthWatch = field(init=False)
    warm: WarmPool = field(init=False)
    # Plain HTTP routes by path (besides /healthz and /metrics): add one here.
    http_routes: dict[str, Callable[[IncomingRequest], Awaitable[None]]] = field(init=False)
    openai_api: OpenAiRoutes = field(init=False)
    provider_voices: ProviderVoices = field(default_factory=ProviderVoices)
    # Connections waiting for their first message with no task (gateway/parking.py).
    parked: set[Connection] = field(default_factory=set, repr=False)
    _failovers: dict[tuple[str, str], Failover] = field(default_factory=dict, init=False,
                                                        repr=False)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.store, self.worker_id, self.config.lease_ttl_s)
        self.openai_api = api = OpenAiRoutes(self)
        self.http_routes = {
            "/v1/voices": self._voices,
            "/v1/models": api.route("GET", serve_models),
            "/v1/audio/speech": api.route("POST", serve_speech, session=True),
            "/v1/audio/transcriptions": api.route("POST", serve_transcription, session=True),
        }
        self.limits.on_revoked = self.end_revoked  # revocations other hosts published
        shared = getattr(self.limits, "limits", None)  # RedisLimits behind SharedLimits

        async def open_any(*args: Any, **kwargs: Any) -> Connection:
            opener = open_native_upstream if self.transport == "native" else open_upstream
            return await opener(*args, **kwargs)

        self.health = HealthWatch(self._probe_request, open_any,
                                  redis=getattr(shared, "redis", None),
                                  prefix=getattr(shared, "prefix", "slng:"),
                                  names=tuple(reg.ENDPOINTS))
        sizes = {}
        for name, provider in self.config.providers.items():
            warm = provider.options.get("warm", 0)
            if not isinstance(warm, int) or isinstance(warm, bool) or not 0 <= warm <= 16 \
                    or (warm and name not in reg.ENDPOINTS):
                raise ConfigError(f"[providers.{name}] warm must be an integer from 0 to 16")
            sizes[name] = warm
            for backup in provider.fallback:
                known = reg.ENDPOINTS.get(backup)
                if known is None or name not in reg.ENDPOINTS \
                        or known.kind != reg.ENDPOINTS[name].kind or backup == name:
                    raise ConfigError(f"[providers.{name}] fallback: {backup!r} is not another "
                                     f"endpoint of the same kind")
        self.warm = WarmPool(sizes, self._probe_request, open_any)

    def _probe_request(self, name: str) -> Any:
        """The upstream a probe of ``name`` opens (the one a session would open)."""
        entry = reg.ENDPOINTS[name]
        endpoint = self.registry.endpoint(entry.kind, name)
        assert endpoint is not None
        dialect = self.registry.dialect(endpoint)
        return dialect.request(Settings()) if entry.kind == "tts" else dialect.request()

    def failover(self, kind: str, endpoint: Endpoint) -> Failover:
        """What a session of ``endpoint`` needs to fail over (one per endpoint name: it
        reads the registry when called, and no session changes it)."""
        known = self._failovers.get((kind, endpoint.name))
        if known is not None:
            return known

        def resolve(name: str) -> tuple[Endpoint, Any]:
            backup = self.registry.endpoint(kind, name)
            if backup is None:
                raise GatewayError(errors.INVALID_PARAMETER,
                                   f"fallback {name!r} is not a {kind} provider of this "
                                   f"gateway; known: {', '.join(reg.known(kind))}")
            try:
                return backup, self.registry.dialect(backup)
            except GatewayError as err:
                raise GatewayError(errors.INVALID_PARAMETER,
                                   f"fallback {name!r} cannot be used: {err.message}") from None

        provider = self.config.providers.get(endpoint.name)
        made = self._failovers[kind, endpoint.name] = Failover(
            resolve, self.health.is_down, provider.fallback if provider is not None else (),
            first_audio_s=self.config.first_audio_timeout_s, replay_s=self.config.stt_replay_s)
        return made

    def end_revoked(self, key_ids: set[str]) -> None:
        """End the open sessions of these keys: `error` auth_failed, close 4000."""
        for opened in list(self.ledger.sessions.values()):
            if opened.key_id in key_ids:
                opened.end.end(GatewayError(errors.AUTH_FAILED, "the API key was revoked"))

    async def run_ledger(self, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The ledger's saves and the revocation checks, until cancelled."""
        watch = RevocationWatch(self.ledger, self.limits, self.end_revoked,
                                self.config.revocation_check_s)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.ledger.run)
            await nursery.start(watch.run)
            await nursery.start(self.health.run)
            await nursery.start(self.warm.run)
            task_status.started()

    async def handle(self, request: IncomingRequest) -> None:
        if not request.is_websocket:
            await self._http(request)
            return
        route = parse_path(request.path)
        if route is not None and route.realtime:
            route = await self._realtime_route(request, route)
            if route is None:
                return
        endpoint = self.registry.endpoint(route.kind, route.name) if route else None
        if route is None or endpoint is None:
            body = {"error": "unknown_endpoint", "path": redact(request.path).split("?")[0],
                    "tts": reg.known("tts"), "stt": reg.known("stt")}
            await request.reject(404, orjson.dumps(body))
            return
        if self.shutdown.is_set():
            await request.reject(503, b'{"error":"server_shutdown"}')
            return
        if self.draining.is_set():
            await request.reject(503, b'{"error":"draining","retry":true}')
            return
        secret, subprotocol = find_key(request.headers, request.subprotocols, route.query)
        if route.realtime and subprotocol is None and "realtime" in request.subprotocols:
            subprotocol = "realtime"
        try:
            key = await self.ledger.call(self.store.authenticate, secret) if secret else None
            store_error = None
        except STORE_ERRORS as exc:
            key, store_error = None, exc
        # The frame layer refuses messages over the key's tier from their header; a
        # connection without a valid key gets the smallest tier's limit for its refusal.
        limits = self.config.tiers[key.tier] if key is not None else min(
            self.config.tiers.values(), key=lambda t: t.max_message_bytes)
        conn = await request.accept(
            subprotocol,
            max_message_bytes=max(limits.max_message_bytes, limits.max_audio_chunk_bytes),
            send_timeout=self.config.slow_client_timeout_s, parkable=True)
        context_id = route.query.get("context_id") or str(uuid.uuid4())
        if store_error is not None:
            await self._store_failed(conn, context_id, store_error, realtime=route.realtime)
            return
        await self.serve_session(conn, route, endpoint, key, secret, context_id)

    async def serve_session(self, conn: Connection, route: Route, endpoint: Endpoint,
                            key: ApiKey | None, secret: str | None, context_id: str, *,
                            take_message: bool = True, lease: str | None = None) -> None:
        """Run one session for an accepted client connection (a WebSocket, or an HTTP
        request's stand-in): refuse a missing, revoked or over-limit key on it, else
        hold one of the key's connection slots for the session's life. ``take_message``
        False: the caller charged the messages-per-minute bucket itself; ``lease``: the
        caller already holds the slot (this session gives it back)."""
        if key is None:
            what = "no API key presented" if secret is None else "unknown or revoked API key"
            self.metrics.error(errors.AUTH_FAILED.code)
            await refuse(conn, context_id, GatewayError(errors.AUTH_FAILED, what),
                         realtime=route.realtime)
            return
        tier = self.config.tiers[key.tier]
        try:
            revoked = lease is None and await self.limits.is_revoked(key.id)
            if lease is None and not revoked:
                lease = await self.limits.open_connection(key.id, tier)
        except OSError as exc:  # the shared limits backend is unreachable: no session
            # The limits say why at error level once per outage; each refusal is info.
            log.info("refusing a session: the limits backend is unavailable (%s)", exc,
                     extra={"context_id": context_id})
            self.metrics.error(errors.INTERNAL_ERROR.code)
            await refuse(conn, context_id, GatewayError(
                errors.INTERNAL_ERROR, "the limits backend is unavailable; try again later",
                close_code=errors.CLOSE_TRY_AGAIN_LATER), realtime=route.realtime)
            return
        if revoked:
            self.metrics.error(errors.AUTH_FAILED.code)
            await refuse(conn, context_id, GatewayError(errors.AUTH_FAILED, "revoked API key"),
                         realtime=route.realtime)
            return
        if lease is None:
            self.metrics.error(errors.TOO_MANY_CONNECTIONS.code)
            await refuse(conn, context_id, GatewayError(
                errors.TOO_MANY_CONNECTIONS,
                f"the {tier.name} tier allows {tier.max_connections} concurrent connection(s)"),
                realtime=route.realtime)
            return
        self.active += 1
        self.idle = trio.Event() if self.idle.is_set() else self.idle
        released = False

        def release() -> None:
            # As soon as the client's connection ends (its close frame, EOF), whatever
            # the upstream's teardown is still doing: a reconnect finds the slot free.
            nonlocal released
            if not released:
                released = True
                self.limits.release_soon(key.id, lease)

        conn.on_closing = release
        parked = False
        try:
            parked = await self._run(conn, route, endpoint, key, tier, context_id,
                                     charge=take_message, release=release)
        finally:
            if not parked:  # else the parked connection's `_resume` ends it
                self._left(release)

    def _left(self, release: Callable[[], None]) -> None:
        """A session is over: its key's slot back, one session fewer in flight."""
        release()
        self.active -= 1
        if self.active == 0:
            self.idle.set()

    async def _run(self, conn: Connection, route: Any, endpoint: Any, key: Any, tier: Any,
                   context_id: str, *, charge: bool = True,
                   release: Callable[[], None] = lambda: None) -> bool:
        """Build the session, open its ledger row and run it; True when its connection
        was parked instead (its `_resume` runs the rest when it wakes)."""
        try:
            dialect = self.registry.dialect(endpoint)
        except GatewayError as err:
            await refuse(conn, context_id, err, with_session_ended=True,
                         realtime=route.realtime)
            return False
        now = trio.current_time()
        presets = {**route.presets(), "context_id": context_id}
        session: Any
        timeout = self.config.provider_timeout_s
        if route.kind == "tts":
            session = TtsSession(endpoint=endpoint, dialect=dialect, tier=tier, now=now,
                                 defaults=presets, provider_timeout_s=timeout)
        elif route.realtime:
            translator = RealtimeTranscription(
                model=endpoint.name, flavour=route.flavour,
                languages=endpoint.languages, stt_endpoints=reg.known("stt"))
            session = RealtimeSttSession(translator=translator, endpoint=endpoint,
                                         dialect=dialect, tier=tier, now=now,
                                         defaults={"context_id": context_id},
                                         provider_timeout_s=timeout)
        else:
            session = SttSession(endpoint=endpoint, dialect=dialect, tier=tier, now=now,
                                 defaults=presets, provider_timeout_s=timeout)
        session.failover = self.failover(route.kind, endpoint)
        if route.passthrough is not None:
            path, query = route.passthrough
            try:
                session.passthrough = dialect.passthrough_request(path, query, dialect.api_key)
            except (AttributeError, ValueError) as exc:
                await refuse(conn, context_id, GatewayError(
                    errors.PROVIDER_UNAVAILABLE, f"no drop-in route {path!r}: {exc}"))
                return False
        try:
            opened = await self.ledger.open(session, key.id, endpoint.name, time.time(),
                                           kind=endpoint.kind, upstream=endpoint.dialect)
        except STORE_ERRORS as exc:
            await self._store_failed(conn, session.context_id, exc, with_session_ended=True,
                                     realtime=route.realtime)
            return False
        log.info("session start", extra={"context_id": session.context_id,
                                          "provider": endpoint.name, "tier": tier.name})
        labels = {"provider": endpoint.name, "tier": tier.name}
        self.metrics.inc("slng_sessions_total", **labels)
        self.metrics.inc("slng_sessions_active", **labels)
        # Waiting for its first message, the connection needs no task (gateway/
        # parking.py). No await between here and the handler's return: a parked
        # connection may wake at the next checkpoint. (Not while the worker stops, nor
        # for a session with something to say first.)
        if not (self.shutdown.is_set() or self.draining.is_set()
                or opened.end.error is not None or isinstance(session, RealtimeSttSession)
                or session.deadline() is not None):
            now = trio.current_time()
            wake_at = min(now + tier.idle_timeout_s, now + tier.max_duration_s)
            # (One partial: what a parked connection keeps is most of what it costs.)
            if conn.park(partial(self._resume, conn, session, opened, labels, key, tier,
                                 charge, release), wake_at, tier.heartbeat_s):
                self.parked.add(conn)
                opened.end.hook = conn.wake  # a revoked key (the bridge takes it over)
                return True
        await self._run_bridge(conn, session, opened, labels, key, tier, charge, None)
        return False

    async def _resume(self, conn: Connection, session: Any, opened: OpenSession,
                      labels: dict[str, str], key: ApiKey, tier: Any, charge: bool,
                      release: Callable[[], None], awoken: Awoken) -> None:
        """A parked connection woke: run its session, then end it as `serve_session`."""
        self.parked.discard(conn)
        try:
            await self._run_bridge(conn, session, opened, labels, key, tier, charge, awoken)
        finally:
            self._left(release)

    def wake_parked(self) -> None:
        """Every parked connection's session runs now (the worker stops or drains)."""
        for conn in list(self.parked):
            conn.wake()

    async def _run_bridge(self, conn: Connection, session: Any, opened: OpenSession,
                          labels: dict[str, str], key: ApiKey, tier: Any, charge: bool,
                          awoken: Awoken | None) -> None:
        """Run the session's bridge (``awoken``: from a parked wait), then count it and
        close its ledger row."""
        try:
            async def take_message(now: float) -> float:
                return await self.limits.take_message(key.id, tier, now)

            if isinstance(session, RealtimeSttSession):
                await send_opening(conn, session.opening_frames(),
                                   self.config.slow_client_timeout_s)
            await SessionBridge(conn, session, shutdown=self.shutdown, metrics=self.metrics,
                                slow_client_timeout=self.config.slow_client_timeout_s,
                                connect_timeout=self.config.upstream_connect_timeout_s,
                                upstream_send_timeout=self.config.upstream_send_timeout_s,
                                take_message=take_message if charge else None,
                                transport=self.transport,
                                draining=self.draining, outside_end=opened.end,
                                on_provider_failed=self.health.failed,
                                warm=self.warm, awoken=awoken).run()
        finally:
            self.metrics.inc("slng_sessions_active", -1, **labels)
            # Each provider that served the session counts what it served (failover).
            for name, served in session.provider_usage().items():
                self.metrics.inc("slng_audio_seconds_total", served["audio_ms"] / 1000.0,
                                 provider=name)
                self.metrics.inc("slng_characters_total", served["characters"], provider=name)
            await self.ledger.close(opened, session.ended or "error")
            log.info("session end", extra={"context_id": session.context_id,
                                            "reason": session.ended})

    async def _realtime_route(self, request: IncomingRequest, route: Route) -> Route | None:
        """``/v1/realtime``: the transcription intent is an STT session on the endpoint the
        query's ``model`` names (or an alias of, such as ``whisper-1``), else on the
        configured default. Other intents are refused (400)."""
        if route.query.get("intent") != "transcription":
            await request.reject(400, orjson.dumps({
                "error": {"type": "invalid_request_error", "code": "unsupported_intent",
                          "message": "this gateway serves /v1/realtime?intent=transcription "
                                     "only (speech-to-text)"}}))
            return None
        # An endpoint's name, or a model alias (`[openai.aliases]`, as the HTTP routes).
        name = self.openai_api.resolve("stt", route.name) or self.config.realtime_stt
        beta = any(k.lower() == "openai-beta" and "realtime=v1" in v
                   for k, v in request.headers)
        return replace(route, name=name, flavour=BETA if beta else GA)

    async def _store_failed(self, conn: Connection, context_id: str, exc: Exception, *,
                            with_session_ended: bool = False, realtime: bool = False) -> None:
        """The key store failed (locked too long, disk full, ...): no session, 1011."""
        log.error("refusing a session: the key store failed (%s)", exc,
                  extra={"context_id": context_id})
        self.metrics.error(errors.INTERNAL_ERROR.code)
        await refuse(conn, context_id, GatewayError(
            errors.INTERNAL_ERROR, "the gateway's key store failed; try again"),
            with_session_ended=with_session_ended, realtime=realtime)

    async def _http(self, request: IncomingRequest) -> None:
        """Plain HTTP on the gateway's own port: the playground page (open), ``/healthz``
        and ``/metrics``, open unless the config gives them a key (``metrics_key``,
        ``healthz_needs_key``), and the routes of `http_routes` (``/v1/voices``, the
        OpenAI-compatible ones), which need a gateway key like every session."""
        path = request.path.split("?", 1)[0]
        page = playground_answer(path, request.method)
        route = self.http_routes.get(path)
        if page is not None:  # the playground (gateway/playground.py): open, no key
            await request.reject(page.status, page.body, page.content_type,
                                 extra_headers=list(page.headers))
        elif route is not None:
            await route(request)
        elif self._needs_key(path) and not self._has_metrics_key(request.headers):
            await request.reject(401, orjson.dumps({
                "error": "unauthorized", "message": f"{path} needs Authorization: Bearer "
                "<the gateway's metrics_key>"}))
        elif path == "/healthz":
            ok = not self.shutdown.is_set() and not self.draining.is_set()
            status = ("ok" if ok else "shutting_down" if self.shutdown.is_set()
                      else "draining")
            body = {"status": status, "sessions": self.active,
                    "pending_connections": self.pending.count,
                    "engines": sorted(self.registry.engine_urls), "pid": os.getpid(),
                    "limits": "ok" if self.limits.healthy else "unreachable",
                    # Sessions go on without it (usage waits on the host): not a 503.
                    "database": "ok" if self.ledger.store_ok else "failing"}
            await request.reject(200 if ok else 503, orjson.dumps(body))
        elif path == "/metrics":
            self.metrics.set("slng_tasks_living",
                             trio.lowlevel.current_statistics().tasks_living)
            await request.reject(200, self.metrics.render().encode(),
                                 "text/plain; version=0.0.4; charset=utf-8")
        else:
            await request.reject(404, orjson.dumps({"error": "not_found", "path": path}))


    async def _voices(self, request: IncomingRequest) -> None:
        """``GET /v1/voices[?provider=X]``: the voice catalogue (slng_fast/catalogue.py)."""
        if request.method not in ("GET", "HEAD"):
            await request.reject(405, orjson.dumps({
                "error": "method_not_allowed", "message": "/v1/voices answers GET"}),
                extra_headers=[("Allow", "GET, HEAD")])
            return
        query = dict(parse_qsl(urlsplit(request.path).query))
        secret, _ = find_key(request.headers, [], query)
        try:
            key = await self.ledger.call(self.store.authenticate, secret) if secret else None
            revoked = key is not None and await self.limits.is_revoked(key.id)
            # A catalogue request costs one message of the key's tier, as a command does.
            wait = 0.0 if key is None or revoked else await self.limits.take_message(
                key.id, self.config.tiers[key.tier], trio.current_time())
        except _BACKEND_ERRORS as exc:
            log.error("refusing GET /v1/voices: %s", exc)
            await request.reject(503, orjson.dumps({
                "error": errors.INTERNAL_ERROR.code,
                "message": "the gateway's key store or limits backend failed; try again"}))
            return
        if key is None or revoked:
            self.metrics.error(errors.AUTH_FAILED.code)
            what = ("no API key presented" if secret is None
                    else "revoked API key" if revoked else "unknown or revoked API key")
            await request.reject(401, orjson.dumps({
                "error": errors.AUTH_FAILED.code, "message": f"{what}; send Authorization: "
                "Bearer <a gateway API key>"}))
            return
        if wait > 0:
            self.metrics.error(errors.RATE_LIMITED.code)
            await request.reject(429, orjson.dumps({
                "error": errors.RATE_LIMITED.code, "retry_after_ms": math.ceil(wait * 1000),
                "message": f"the {key.tier} tier's messages per minute are used up"}),
                extra_headers=[("Retry-After", str(math.ceil(wait)))])
            return
        registry = self.registry
        endpoints = registry.endpoints()
        fetched = await self.provider_voices.lookup(
            registry, ttl=self.config.voices_cache_ttl_s,
            timeout=self.config.voices_fetch_timeout_s, only=query.get("provider"))
        try:
            body = catalogue(endpoints, engine_info=registry.engine_info,
                             capabilities=registry.capabilities(),
                             available={e.name: registry.available(e) for e in endpoints},
                             provider=query.get("provider"), provider_voices=fetched)
        except UnknownProvider as exc:
            await request.reject(404, orjson.dumps({
                "error": "unknown_provider", "provider": str(exc),
                "tts": reg.known("tts"), "stt": reg.known("stt")}))
            return
        await request.reject(200, orjson.dumps(body))

    def _needs_key(self, path: str) -> bool:
        if self.config.metrics_key is None:
            return False
        return path == "/metrics" or (path == "/healthz" and self.config.healthz_needs_key)

    def _has_metrics_key(self, headers: list[tuple[str, str]]) -> bool:
        expected = (self.config.metrics_key or "").encode()
        for name, value in headers:
            if name.lower() == "authorization":
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and expected \
                        and hmac.compare_digest(token.strip().encode(), expected):
                    return True
        return False


async def refuse(conn: Connection, context_id: str, err: GatewayError, *,
                 with_session_ended: bool = False, realtime: bool = False) -> None:
    """Refuse an accepted connection: `error`, maybe `session_ended`, then the close code.
    ``realtime``: the client speaks OpenAI's Realtime protocol (its `error`, no
    `session_ended`)."""
    with trio.move_on_after(2.0):
        try:
            if realtime:
                await conn.send(orjson.dumps(error_event(err.code, err.message)).decode())
            else:
                await conn.send(events.error(context_id, err))
            if with_session_ended and not realtime:
                await conn.send(events.session_ended(context_id, "error", {
                    "characters": 0, "audio_ms": 0, "messages": 0, "duration_ms": 0}))
            await conn.close(err.fatal_close_code or errors.CLOSE_INTERNAL_ERROR, err.message[:120])
        except Exception:
            pass


async def send_opening(conn: Connection, frames: list[bytes], timeout: float) -> None:
    """Frames a protocol sends as the connection opens (OpenAI's ``session.created``); a
    client already gone is left to the session's own reader to notice."""
    with trio.move_on_after(timeout):
        try:
            for frame in frames:
                await conn.send(frame.decode())
        except ConnectionClosed:
            pass


TRANSPORTS = ("native", "trio-websocket")


async def serve_gateway(gateway: Gateway, host: str, port: int, *,
                        ssl_context: ssl.SSLContext | None = None, transport: str = "native",
                        reuse_port: bool = False,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until `gateway.shutdown` is set, then end every session and return.
    ``transport``: the native frame codec (default) or trio-websocket (the baseline);
    ``reuse_port``: share the port with other worker processes (native only)."""

    config = gateway.config
    pending = PendingConnections(
        config.max_pending_connections, config.max_pending_per_address,
        on_refused=lambda: gateway.metrics.inc("slng_refusals_total",
                                               limit="pending_connections"))
    gateway.pending = pending

    async def serve(task_status: trio.TaskStatus[int]) -> None:
        if transport == "native":
            await serve_native_websocket(gateway.handle, host, port, ssl_context=ssl_context,
                                         reuse_port=reuse_port, pending=pending,
                                         handshake_timeout=config.handshake_timeout_s,
                                         task_status=task_status)
        else:
            await serve_trio_websocket(gateway.handle, host, port, ssl_context=ssl_context,
                                       task_status=task_status)

    gateway.transport = transport
    current_deadlines()  # the sessions' timers' one task, from the start
    when_set(gateway.shutdown, gateway.wake_parked)
    when_set(gateway.draining, gateway.wake_parked)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run_ledger)
        bound = await nursery.start(serve)
        task_status.started(bound)
        await gateway.shutdown.wait()
        if gateway.active:
            with trio.move_on_after(gateway.config.shutdown_grace_s):
                await gateway.idle.wait()
        nursery.cancel_scope.cancel()
