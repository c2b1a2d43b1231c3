"""A small Redis client over one trio TCP stream (TLS for ``rediss://``): enough for the
shared limits (commands, pipelines, Lua scripts), nothing more. Many tasks share the
connection: requests are written under a lock and replies matched to them in FIFO
order, which is how Redis answers. Any failure to reach Redis is `RedisUnavailable`;
the next call reconnects."""

from __future__ import annotations

import hashlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

from slng_fast.resp import RespError, RespParser, RespProtocolError, encode

# Replies that mean "this Redis cannot serve now", not "your command is wrong".
_UNAVAILABLE_KINDS = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}


class RedisUnavailable(OSError):
    """Redis cannot be reached, the connection dropped, or it did not answer in time."""


@dataclass(frozen=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """`redis[s]://[[user]:password@]host[:port][/db]`; ``rediss`` is Redis over TLS,
        verified against the system's trusted certificates."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"a Redis URL starts with redis:// or rediss://, not "
                             f"{url.split(':')[0]!r}")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the path of a Redis URL is the database number, not {path!r}")
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise ValueError(f"bad port in Redis URL: {exc}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=int(path) if path else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
        )

    def __str__(self) -> str:  # never shows the password (it goes to logs)
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


class Script:
    """A Lua script, run by its SHA1 so only the hash crosses the wire once loaded."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Waiter:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: Any = None

    def set(self, reply: Any) -> None:
        self.reply = reply
        self.done.set()


class _Connection:
    """One TCP stream, its reader task, and the replies it still owes, in order."""

    def __init__(self, stream: trio.abc.Stream, address: RedisAddress) -> None:
        self.stream = stream
        self.address = address
        self.parser = RespParser()
        self.pending: deque[_Waiter] = deque()
        self.send_lock = trio.Lock()
        self.scope = trio.CancelScope()
        self.error: RedisUnavailable | None = None

    @property
    def closed(self) -> bool:
        return self.error is not None

    def fail(self, error: RedisUnavailable) -> None:
        """Stop using this stream: every waiting request gets `error`."""
        if self.error is None:
            self.error = error
        self.scope.cancel()
        while self.pending:
            self.pending.popleft().set(self.error)

    async def read_loop(self) -> None:
        try:
            with self.scope:
                while True:
                    data = await self.stream.receive_some(65536)
                    if not data:
                        raise RedisUnavailable(f"{self.address} closed the connection")
                    for reply in self.parser.feed(data):
                        if not self.pending:
                            raise RespProtocolError("a reply nobody asked for")
                        self.pending.popleft().set(reply)
        except RedisUnavailable as exc:
            self.fail(exc)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.fail(RedisUnavailable(f"lost the connection to {self.address}: {exc}"))
        except RespProtocolError as exc:
            self.fail(RedisUnavailable(f"{self.address} sent something that is not RESP: {exc}"))
        finally:
            self.fail(RedisUnavailable(f"the connection to {self.address} is closed"))
            await trio.aclose_forcefully(self.stream)

    async def request(self, data: bytes, count: int) -> list[Any]:
        """Send `count` commands already encoded in `data`; their replies, in order."""
        waiters = [_Waiter() for _ in range(count)]
        async with self.send_lock:
            if self.error is not None:
                raise self.error
            self.pending.extend(waiters)
            try:
                await self.stream.send_all(data)
            except BaseException as exc:
                # A half-written command (cancelled, or the peer went away) leaves the
                # stream out of step: nobody can use it after this.
                self.fail(RedisUnavailable(f"could not write to {self.address}: {exc!r}"))
                if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
                    raise self.error from exc  # type: ignore[misc]
                raise
        for waiter in waiters:
            await waiter.done.wait()
        replies = [waiter.reply for waiter in waiters]
        for reply in replies:
            if isinstance(reply, RedisUnavailable):
                raise reply
        return replies


class RedisClient:
    """Use through `open_redis`. Every call has a deadline (`timeout`, seconds); a
    call that misses it closes the connection, since a late reply would be matched to
    the wrong request, and raises RedisUnavailable."""

    def __init__(self, address: RedisAddress, nursery: trio.Nursery, *,
                 timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        self._nursery = nursery
        self._conn: _Connection | None = None
        self._connect_lock = trio.Lock()
        self._closed = False

    async def execute(self, *args: Any, timeout: float | None = None) -> Any:
        """One command's reply; an error reply is raised as RespError."""
        (reply,) = await self._call(encode(*args), 1, timeout)
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Any]], *,
                       timeout: float | None = None) -> list[Any]:
        """Several commands in one write; their replies in order, errors as RespError
        values (a pipeline is not a transaction: the others still ran)."""
        if not commands:
            return []
        data = b"".join(encode(*command) for command in commands)
        return await self._call(data, len(commands), timeout)

    async def evalsha(self, script: Script, keys: Sequence[Any] = (), args: Sequence[Any] = (),
                      *, timeout: float | None = None) -> Any:
        """Run `script`, loading it first if this Redis does not know it (a new or
        restarted server answers NOSCRIPT)."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.execute(*command, timeout=timeout)
        except RespError as exc:
            if exc.kind != "NOSCRIPT":
                raise
        await self.execute("SCRIPT", "LOAD", script.source, timeout=timeout)
        return await self.execute(*command, timeout=timeout)

    async def aclose(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.fail(RedisUnavailable("the Redis client is closed"))

    async def _call(self, data: bytes, count: int, timeout: float | None) -> list[Any]:
        limit = self.timeout if timeout is None else timeout
        conn = None
        try:
            with trio.fail_after(limit):
                conn = await self._connection()
                replies = await conn.request(data, count)
        except trio.TooSlowError:
            if conn is not None:
                conn.fail(RedisUnavailable(f"{self.address} did not answer within {limit} s"))
            raise RedisUnavailable(
                f"{self.address} did not answer within {limit} s") from None
        for reply in replies:
            if isinstance(reply, RespError) and reply.kind in _UNAVAILABLE_KINDS:
                raise RedisUnavailable(f"{self.address} cannot serve now: {reply.message}")
        return replies

    async def _connection(self) -> _Connection:
        if self._closed:
            raise RedisUnavailable("the Redis client is closed")
        if self._conn is not None and not self._conn.closed:
            return self._conn
        async with self._connect_lock:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            try:
                stream: trio.abc.Stream
                if self.address.tls:
                    tls = await trio.open_ssl_over_tcp_stream(
                        self.address.host, self.address.port,
                        ssl_context=ssl.create_default_context())
                    stream = tls
                    try:  # here, so a refused certificate says so
                        await tls.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(tls)
                        raise
                else:
                    stream = await trio.open_tcp_stream(self.address.host, self.address.port)
            except trio.BrokenResourceError as exc:
                reason = exc.__cause__ or exc
                raise RedisUnavailable(f"cannot connect to {self.address}: {reason}") from exc
            except OSError as exc:
                raise RedisUnavailable(f"cannot connect to {self.address}: {exc}") from exc
            conn = _Connection(stream, self.address)
            self._nursery.start_soon(conn.read_loop)
            await self._handshake(conn)
            self._conn = conn
            return conn

    async def _handshake(self, conn: _Connection) -> None:
        commands: list[tuple[Any, ...]] = []
        if self.address.password is not None:
            user = (self.address.username,) if self.address.username else ()
            commands.append(("AUTH", *user, self.address.password))
        if self.address.db:
            commands.append(("SELECT", self.address.db))
        if not commands:
            return
        try:
            replies = await conn.request(b"".join(encode(*c) for c in commands), len(commands))
        except BaseException:
            conn.fail(RedisUnavailable(f"handshake with {self.address} interrupted"))
            raise
        for command, reply in zip(commands, replies):
            if isinstance(reply, RespError):
                conn.fail(RedisUnavailable(f"{command[0]} refused by {self.address}"))
                raise RedisUnavailable(
                    f"{self.address} refused {command[0]}: {reply.message}")


@asynccontextmanager
async def open_redis(url: str, *, timeout: float = 2.0) -> AsyncIterator[RedisClient]:
    """A client for `url`. It connects on its first call, so opening it works even
    while Redis is down; calls raise RedisUnavailable until it is back."""
    address = RedisAddress.parse(url)
    async with trio.open_nursery() as nursery:
        client = RedisClient(address, nursery, timeout=timeout)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
