"""RESP2, the Redis wire protocol, as a sans-I/O codec: `encode` turns a command into
bytes and `RespParser` turns received bytes into replies. No sockets here, so the codec
is tested byte by byte and the client (gateway/redis_client.py) only moves bytes."""

from __future__ import annotations

from typing import Any

CRLF = b"\r\n"
# A reply line (status, error, integer, length) longer than this is a broken peer, not
# a slow one: stop buffering rather than wait forever for a CRLF.
MAX_LINE = 64 * 1024


class RespError(Exception):
    """An error reply (`-ERR ...`). The parser returns it as a value, so one error in a
    pipeline does not hide the replies after it; the client raises it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def kind(self) -> str:
        """The error's first word: ERR, NOSCRIPT, WRONGTYPE, LOADING, ..."""
        return self.message.split(" ", 1)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RespError) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)

    def __repr__(self) -> str:
        return f"RespError({self.message!r})"


class RespProtocolError(ValueError):
    """The bytes are not RESP2: the connection cannot be trusted any more."""


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise TypeError("RESP has no booleans; pass 0/1 or a string")
    if isinstance(value, (int, float)):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def encode(*args: Any) -> bytes:
    """A command as Redis wants it from clients: an array of bulk strings."""
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for value in args:
        data = _arg(value)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Incomplete(Exception):
    pass


class RespParser:
    """Feed it bytes as they arrive; it returns every reply completed so far.
    Simple strings come back as str, bulk strings as bytes (None for nil), integers as
    int, arrays as lists (None for a nil array), errors as RespError values."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        self._buf += data
        replies = []
        while self._buf:
            try:
                value, end = self._parse(0)
            except _Incomplete:
                break
            del self._buf[:end]
            replies.append(value)
        return replies

    @property
    def buffered(self) -> int:
        """Bytes of a reply not yet complete."""
        return len(self._buf)

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buf.find(CRLF, pos)
        if end < 0:
            if len(self._buf) - pos > MAX_LINE:
                raise RespProtocolError("reply line too long")
            raise _Incomplete
        return bytes(self._buf[pos:end]), end + 2

    def _int(self, text: bytes) -> int:
        try:
            return int(text)
        except ValueError:
            raise RespProtocolError(f"bad integer {text[:40]!r}") from None

    def _parse(self, pos: int) -> tuple[Any, int]:
        if pos >= len(self._buf):
            raise _Incomplete
        kind = self._buf[pos:pos + 1]
        line, pos = self._line(pos + 1)
        if kind == b"+":
            return line.decode(errors="replace"), pos
        if kind == b"-":
            return RespError(line.decode(errors="replace")), pos
        if kind == b":":
            return self._int(line), pos
        if kind == b"$":
            size = self._int(line)
            if size == -1:
                return None, pos
            if size < 0:
                raise RespProtocolError(f"bad bulk length {size}")
            if len(self._buf) < pos + size + 2:
                raise _Incomplete
            if self._buf[pos + size:pos + size + 2] != CRLF:
                raise RespProtocolError("bulk string not followed by CRLF")
            return bytes(self._buf[pos:pos + size]), pos + size + 2
        if kind == b"*":
            count = self._int(line)
            if count == -1:
                return None, pos
            if count < 0:
                raise RespProtocolError(f"bad array length {count}")
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise RespProtocolError(f"unknown reply type {bytes(kind)!r}")
