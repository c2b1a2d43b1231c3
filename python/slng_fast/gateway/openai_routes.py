"""The OpenAI-compatible HTTP routes (``GET /v1/models``, ``POST /v1/audio/speech``,
``POST /v1/audio/transcriptions``): what they share. The key comes as ``Authorization:
Bearer`` (the SDK's ``api_key``); each request costs one message of the key's tier,
as a ``/v1/voices`` request does; refusals are OpenAI's error bodies. Speech and
transcription run as sessions of the gateway (gateway/openai_speech.py,
gateway/openai_transcriptions.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import orjson
import trio

from slng_fast import errors
from slng_fast.config import Config, TierLimits
from slng_fast.gateway.http import ClientGone, HttpError, HttpExchange
from slng_fast.gateway.http_session import HttpSessionConnection
from slng_fast.gateway.ledger import Ledger
from slng_fast.gateway.routing import Route, find_key
from slng_fast.gateway.shared_limits import SharedLimits
from slng_fast.gateway.transport import Connection, IncomingRequest
from slng_fast.limits import LocalLimits
from slng_fast.metrics import Metrics
from slng_fast.openai_compat import errors as api_errors
from slng_fast.openai_compat.errors import ApiError
from slng_fast.openai_compat.requests import model_list
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.store import STORE_ERRORS, ApiKey, StoreBackend
from slng_fast.vocabulary import Endpoint

log = logging.getLogger("slng_fast.gateway.openai")

HttpRoute = Callable[[IncomingRequest], Awaitable[None]]
# The key store's failures and the limits backend's (RedisUnavailable is an OSError).
_BACKEND_ERRORS: tuple[type[Exception], ...] = (*STORE_ERRORS, OSError)


class Host(Protocol):
    """What these routes use of the gateway (gateway/server.py's `Gateway`)."""

    config: Config
    registry: ProviderRegistry
    store: StoreBackend
    ledger: Ledger
    limits: LocalLimits | SharedLimits
    metrics: Metrics
    shutdown: trio.Event
    draining: trio.Event

    async def serve_session(self, conn: Connection, route: Route, endpoint: Endpoint,
                            key: ApiKey | None, secret: str | None, context_id: str, *,
                            take_message: bool = True, lease: str | None = None) -> None: ...


@dataclass
class Admitted:
    """A request let in: its key, the key's tier, and (for a route that runs a session)
    the lease on one of the key's connection slots, taken before the body is read so
    that a key's uploads in flight are bounded like its sessions."""

    key: ApiKey
    tier: TierLimits
    lease: str | None = None
    lease_taken: bool = False  # handed to the session, which gives it back


# A route's work once the request is admitted.
Serve = Callable[["OpenAiRoutes", HttpExchange, Admitted], Awaitable[None]]


class OpenAiRoutes:
    def __init__(self, gateway: Host) -> None:
        self.gateway = gateway

    def resolve(self, kind: str, model: str) -> str | None:
        """The endpoint a model name (an endpoint's own, or an alias) means."""
        registry = self.gateway.registry
        name = model if registry.endpoint(kind, model) is not None \
            else self.gateway.config.model_aliases.get(model)
        return name if name is not None and registry.endpoint(kind, name) is not None else None

    def route(self, method: str, serve: Serve, *, session: bool = False) -> HttpRoute:
        """The route that answers ``method`` by ``serve``, after admitting the key (and,
        ``session``: taking one of its connection slots)."""
        async def route(request: IncomingRequest) -> None:
            http = request.http
            if http is None:  # trio-websocket answers plain HTTP with reject() only
                await request.reject(501, ApiError(
                    501, "the OpenAI-compatible routes need the native transport "
                    "(serve --transport native)", type="server_error").body())
                return
            admitted: Admitted | None = None
            try:
                if request.method != method and not (method == "GET" and request.method == "HEAD"):
                    raise ApiError(405, f"{request.path.split('?')[0]} answers {method}",
                                   code="method_not_allowed")
                admitted = await self.admit(request, session=session)
                http.admitted()
                await serve(self, http, admitted)
            except ApiError as err:
                if http.started:
                    raise
                await http.respond(err.status, err.body(), "application/json",
                                   headers=err.headers())
            except HttpError as exc:  # a body too large or too slow: OpenAI's shape too
                if http.started:
                    raise
                code = {413: "request_too_large", 408: "request_timeout"}.get(
                    exc.status, "invalid_request_body")
                refusal = ApiError(exc.status, exc.message, code=code)
                await http.respond(refusal.status, refusal.body(), "application/json",
                                   headers=[("connection", "close")])
            except ClientGone:
                pass
            finally:
                if admitted is not None and admitted.lease is not None \
                        and not admitted.lease_taken:
                    self.gateway.limits.release_soon(admitted.key.id, admitted.lease)
        return route

    async def admit(self, request: IncomingRequest, *, session: bool = False) -> Admitted:
        """The request's key and tier, its message charged (and, ``session``, a lease on
        one of the key's connection slots); else the refusal."""
        gateway = self.gateway
        if gateway.shutdown.is_set() or gateway.draining.is_set():
            raise api_errors.unavailable("the gateway is shutting down; try another instance",
                                         "server_shutdown")
        secret, _ = find_key(request.headers, [], {})
        try:
            key = await gateway.ledger.call(gateway.store.authenticate, secret) \
                if secret else None
            revoked = key is not None and await gateway.limits.is_revoked(key.id)
            wait = 0.0 if key is None or revoked else await gateway.limits.take_message(
                key.id, gateway.config.tiers[key.tier], trio.current_time())
        except _BACKEND_ERRORS as exc:
            log.error("refusing %s: %s", request.path.split("?")[0], exc)
            raise api_errors.unavailable("the gateway's key store or limits backend failed; "
                                         "try again", errors.INTERNAL_ERROR.code) from None
        if key is None or revoked:
            gateway.metrics.error(errors.AUTH_FAILED.code)
            what = ("no API key presented" if secret is None
                    else "revoked API key" if revoked else "unknown or revoked API key")
            raise api_errors.unauthorized(f"{what}; send Authorization: Bearer <a gateway "
                                          "API key>")
        tier = gateway.config.tiers[key.tier]
        if wait > 0:
            gateway.metrics.error(errors.RATE_LIMITED.code)
            raise api_errors.rate_limited(
                f"the {key.tier} tier allows {tier.messages_per_minute} requests or "
                "messages a minute", wait)
        if not session:
            return Admitted(key, tier)
        try:
            lease = await gateway.limits.open_connection(key.id, tier)
        except OSError:
            raise api_errors.unavailable("the limits backend is unavailable; try again later",
                                         errors.INTERNAL_ERROR.code) from None
        if lease is None:
            gateway.metrics.error(errors.TOO_MANY_CONNECTIONS.code)
            raise api_errors.rate_limited(
                f"the {tier.name} tier allows {tier.max_connections} concurrent "
                "connection(s)", 1.0, errors.TOO_MANY_CONNECTIONS.code)
        return Admitted(key, tier, lease)


async def run_session(api: OpenAiRoutes, conn: HttpSessionConnection, endpoint: Endpoint,
                      admitted: Admitted, context_id: str,
                      answer: Callable[[], Awaitable[None]]) -> None:
    """Run a session for ``conn`` while ``answer()`` writes the response from its events;
    the session ends when the answer is complete or its client is gone. A refusal
    (`ApiError`) or a client gone (`ClientGone`) raised by ``answer`` comes out as
    itself, not in an exception group."""
    failure: ApiError | ClientGone | None = None
    async with trio.open_nursery() as nursery:
        admitted.lease_taken = True
        nursery.start_soon(partial(api.gateway.serve_session, conn,
                                   Route(endpoint.kind, endpoint.name, {}), endpoint,
                                   admitted.key, None, context_id, take_message=False,
                                   lease=admitted.lease))
        try:
            await answer()
        except (ApiError, ClientGone) as exc:
            failure = exc
        finally:
            conn.finish(gone=failure is not None)
    if failure is not None:
        raise failure


async def answer_from(http: HttpExchange, conn: HttpSessionConnection,
                      on_event: Callable[[dict[str, Any]], Awaitable[bool]],
                      ended_early: str) -> None:
    """Hand ``conn``'s events to ``on_event`` until it says the answer is complete. An
    ``error`` event is the HTTP refusal while nothing is sent, and after that cuts the
    answer where it stands (as OpenAI does); a session that ends before the answer
    started is a 503 saying ``ended_early``."""
    async for event in conn.events:
        if event.get("type") == "error":
            if http.started:
                return  # cut: the body ends without its last part
            raise api_errors.from_event(event)
        if await on_event(event):
            return
    if not http.started:
        raise api_errors.unavailable(ended_early)


async def serve_models(api: OpenAiRoutes, http: HttpExchange, admitted: Admitted) -> None:
    """``GET /v1/models``: every endpoint and alias (available or not: ``available``
    says)."""
    gateway = api.gateway
    registry = gateway.registry
    endpoints = [(e.name, e.kind, registry.available(e)) for e in registry.endpoints()]
    body = model_list(endpoints, gateway.config.model_aliases)
    await http.respond(200, orjson.dumps(body), "application/json")
