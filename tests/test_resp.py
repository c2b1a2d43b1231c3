"""The RESP2 codec: every reply type, in one piece and split anywhere."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slng_fast.resp import RespError, RespParser, RespProtocolError, encode


def wire(value: Any) -> bytes:
    """What a Redis server sends for `value` (the test's own encoder of replies)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, RespError):
        return b"-" + value.message.encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(wire(item) for item in value)


line_text = st.text(st.characters(blacklist_characters="\r\n", max_codepoint=0x2FF), max_size=20)
replies = st.recursive(
    st.none() | st.integers(-2**63, 2**63 - 1) | st.binary(max_size=40) | line_text
    | line_text.map(lambda text: RespError("ERR " + text)),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


def test_encode_command_as_bulk_strings():
    assert encode("SET", "k", "v") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    assert encode("EXPIRE", b"\x00\r\n", 15, 1.5) == (
        b"*4\r\n$6\r\nEXPIRE\r\n$3\r\n\x00\r\n\r\n$2\r\n15\r\n$3\r\n1.5\r\n")
    assert encode("GET", "é") == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(TypeError):
        encode("SET", "k", None)
    with pytest.raises(TypeError):
        encode("SET", "k", True)
    with pytest.raises(ValueError):
        encode()


@pytest.mark.parametrize("data, value", [
    (b"+OK\r\n", "OK"),
    (b"-ERR unknown command\r\n", RespError("ERR unknown command")),
    (b":42\r\n", 42),
    (b":-7\r\n", -7),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*3\r\n:1\r\n$-1\r\n*2\r\n+a\r\n-NOSCRIPT no\r\n",
     [1, None, ["a", RespError("NOSCRIPT no")]]),
])
def test_each_reply_type(data, value):
    assert RespParser().feed(data) == [value]


def test_error_value_knows_its_kind():
    (error,) = RespParser().feed(b"-NOSCRIPT No matching script\r\n")
    assert isinstance(error, RespError) and error.kind == "NOSCRIPT"
    assert error.message == "NOSCRIPT No matching script"


def test_several_replies_in_one_read_and_the_rest_kept():
    parser = RespParser()
    assert parser.feed(b"+OK\r\n:1\r\n$3\r\nab") == ["OK", 1]
    assert parser.buffered == 6
    assert parser.feed(b"c\r\n") == [b"abc"]
    assert parser.buffered == 0


@pytest.mark.parametrize("data", [
    b"?what\r\n", b":12x\r\n", b"$-2\r\n", b"*-3\r\n", b"$3\r\nabcde\r\n", b"$x\r\n",
])
def test_garbage_is_a_protocol_error(data):
    with pytest.raises(RespProtocolError):
        RespParser().feed(data)


def test_endless_line_is_a_protocol_error():
    parser = RespParser()
    with pytest.raises(RespProtocolError):
        parser.feed(b"+" + b"x" * (70 * 1024))


def test_deeply_nested_arrays():
    value: Any = [b"leaf"]
    for _ in range(50):
        value = [value, 1]
    assert RespParser().feed(wire(value)) == [value]


@given(st.lists(replies, min_size=1, max_size=5), st.data())
def test_split_at_every_position(values, data):
    stream = b"".join(wire(value) for value in values)
    cut = data.draw(st.integers(0, len(stream)))
    parser = RespParser()
    got = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
    assert got == values
    assert parser.buffered == 0


@given(st.lists(replies, min_size=1, max_size=3))
def test_byte_by_byte(values):
    stream = b"".join(wire(value) for value in values)
    parser = RespParser()
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i:i + 1])
    assert got == values
