"""classify_frame: every kind of answer, str and bytes, and agreement with json.loads."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast._native import InvalidArgumentError, NativeError, classify_frame

LIMIT = 32768
TTS_COMMANDS = ["init", "input_text", "flush", "stop", "clear", "configure", "ping"]
STT_COMMANDS = ["start", "finalize", "stop", "ping"]


def classify(frame: str, max_bytes: int = LIMIT, endpoint: str = "tts") -> tuple[str, Any, Any]:
    """Classify as str and as bytes; both must give the same answer."""
    as_str = classify_frame(frame, max_bytes, endpoint)
    as_bytes = classify_frame(frame.encode(), max_bytes, endpoint)
    assert same(as_str, as_bytes), (as_str, as_bytes)
    return as_str


def same(a: object, b: object) -> bool:
    """Equal with the same types all the way down, floats bit for bit, dict keys in order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return a.hex() == b.hex() or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple))
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# ---- commands ----------------------------------------------------------------


@pytest.mark.parametrize("name", TTS_COMMANDS)
def test_tts_commands(name: str) -> None:
    frame = json.dumps({"type": name, "x": 1})
    assert classify(frame) == ("command", name, {"type": name, "x": 1})


@pytest.mark.parametrize("name", STT_COMMANDS)
def test_stt_commands(name: str) -> None:
    frame = json.dumps({"type": name})
    assert classify(frame, endpoint="stt") == ("command", name, {"type": name})


def test_default_endpoint_is_tts() -> None:
    assert classify_frame('{"type":"flush"}', LIMIT)[0] == "command"
    assert classify_frame('{"type":"start"}', LIMIT)[0] == "native"


@pytest.mark.parametrize(("name", "endpoint"), [("start", "tts"), ("finalize", "tts"), ("flush", "stt"), ("init", "stt")])
def test_other_endpoints_commands_are_native(name: str, endpoint: str) -> None:
    assert classify(json.dumps({"type": name}), endpoint=endpoint) == ("native", name, {"type": name})


def test_command_fields_are_the_whole_object() -> None:
    fields = {
        "type": "init",
        "voice_id": "kanak",
        "sample_rate_hz": 24000,
        "style": {"speed": 1.25, "stability": None, "tags": ["a", "b"], "on": True, "off": False},
        "big": 2**70,
        "neg": -(2**64),
        "u64": 2**64 - 1,
        "empty": {},
        "list": [],
    }
    kind, name, got = classify(json.dumps(fields))
    assert (kind, name) == ("command", "init")
    assert same(got, fields)


def test_input_text_with_unicode() -> None:
    text = "Grüße, 世界! \U0001f600 \"quoted\" back\\slash\nnew line"
    for ensure_ascii in (True, False):
        frame = json.dumps({"type": "input_text", "text": text}, ensure_ascii=ensure_ascii)
        assert classify(frame) == ("command", "input_text", {"type": "input_text", "text": text})


def test_names_and_common_keys_are_interned() -> None:
    kind, name, fields = classify_frame('{"type":"input_text","text":"hi"}', LIMIT)
    assert kind is sys.intern("command")
    assert name is sys.intern("input_text")
    keys = list(fields)
    assert keys[0] is sys.intern("type") and keys[1] is sys.intern("text")


# ---- native ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type":"Speak","text":"hi"}', ("native", "Speak", {"type": "Speak", "text": "hi"})),
        ('{"type":"control","action":"flush"}', ("native", "control", {"type": "control", "action": "flush"})),
        ('{"text":" "}', ("native", None, {"text": " "})),
        ('{"text":"Hello ","try_trigger_generation":true}', ("native", None, {"text": "Hello ", "try_trigger_generation": True})),
        ("{}", ("native", None, {})),
        ('{"type":"Flush"}', ("native", "Flush", {"type": "Flush"})),
        ('{"type":"flush "}', ("native", "flush ", {"type": "flush "})),
        ('{"type":5}', ("native", None, {"type": 5})),
        ('{"type":null}', ("native", None, {"type": None})),
        ('{"type":{"name":"flush"}}', ("native", None, {"type": {"name": "flush"}})),
        ('{"data":{"type":"flush"}}', ("native", None, {"data": {"type": "flush"}})),
        ('{"type":""}', ("native", "", {"type": ""})),
    ],
)
def test_native_objects(frame: str, expected: tuple[str, Any, Any]) -> None:
    assert classify(frame) == expected


def test_native_type_is_the_dict_value() -> None:
    _, kind, fields = classify_frame('{"type":"Speak"}', LIMIT)
    assert kind is fields["type"]


@pytest.mark.parametrize(
    "frame",
    [
        "Hello world",
        "",
        " ",
        "\n",
        '{"type": "init"',
        '{"type": "init",}',
        "{'type': 'init'}",
        '{"type": "flush"} and more',
        "42 is the answer",
        "true story",
        "[1, 2",
        "NaN",
        "Infinity",
        '{"speed": NaN}',
        '{"speed": -Infinity}',
        "\u00a0{}",
        "\ufeff{}",
        '{"a":"raw\ttab"}',
        "// comment",
        "<speak>Hello</speak>",
    ],
)
def test_text_that_is_not_json_is_native(frame: str) -> None:
    assert classify(frame) == ("native", None, None)


def test_json_whitespace_around_is_allowed() -> None:
    assert classify(' \t\r\n{"type":"flush"}\n ') == ("command", "flush", {"type": "flush"})


# ---- invalid -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "word"),
    [("[1]", "array"), ("[]", "array"), ("42", "number"), ("-1.5", "number"), ('"x"', "string"), ("true", "boolean"), ("null", "null")],
)
def test_json_that_is_no_object_is_invalid(frame: str, word: str) -> None:
    kind, code, message = classify(frame)
    assert (kind, code) == ("invalid", "invalid_message")
    assert word in message


def test_too_deep_is_invalid() -> None:
    ok = '{"a":' + "[" * 63 + "]" * 63 + "}"
    assert classify(ok)[0] == "native"
    deep = '{"a":' + "[" * 64 + "]" * 64 + "}"
    kind, code, message = classify(deep)
    assert (kind, code) == ("invalid", "invalid_message")
    assert "64" in message
    # Deeper than Python's own recursion limit: no crash.
    assert classify("[" * 100_000, max_bytes=1 << 20)[:2] == ("invalid", "invalid_message")


def test_huge_integers() -> None:
    digits = "9" * 640
    assert classify('{"n": %s}' % digits)[2] == {"n": int(digits)}
    assert classify('{"n": -%s}' % digits)[2] == {"n": -int(digits)}
    kind, code, message = classify('{"n": 1%s}' % digits)
    assert (kind, code) == ("invalid", "invalid_message")
    assert "641 digits" in message


def test_lone_surrogate_escape_is_invalid() -> None:
    for frame in ['{"text":"\\ud83d"}', '{"text":"\\ude00x"}', '{"text":"\\ud83d\\u0041"}']:
        kind, code, message = classify(frame)
        assert (kind, code) == ("invalid", "invalid_message"), frame
        assert "surrogate" in message
    # A proper pair is one character.
    assert classify('{"text":"\\ud83d\\ude00"}')[2] == {"text": "\U0001f600"}


def test_message_too_large() -> None:
    frame = json.dumps({"type": "input_text", "text": "x" * 39966})
    assert len(frame) == 40000
    assert classify(frame) == ("invalid", "message_too_large", "frame of 40000 bytes exceeds the 32768-byte limit")


def test_size_limit_counts_utf8_bytes_and_is_inclusive() -> None:
    frame = '{"type":"flush"}'
    assert classify(frame, max_bytes=len(frame))[0] == "command"
    assert classify(frame, max_bytes=len(frame) - 1)[:2] == ("invalid", "message_too_large")
    text = '{"text":"ééé"}'  # 14 characters, 17 bytes
    assert classify(text, max_bytes=17)[0] == "native"
    assert classify(text, max_bytes=16) == ("invalid", "message_too_large", "frame of 17 bytes exceeds the 16-byte limit")


def test_size_is_checked_before_utf8_and_json() -> None:
    assert classify_frame(b"\xff" * 100, 10)[:2] == ("invalid", "message_too_large")
    assert classify_frame("Hello world", 5)[:2] == ("invalid", "message_too_large")


@pytest.mark.parametrize(
    ("frame", "where"),
    [
        (b"\xff", "offset 0"),
        (b'{"type":"flush","x":"\xc3"}', "offset 21"),
        (b"abc\xe2\x82", "incomplete"),
        (b"\xc0\xaf", "offset 0"),  # overlong
        (b"\xed\xa0\x80", "offset 0"),  # a surrogate in UTF-8 form
        (b"\xf4\x90\x80\x80", "offset 0"),  # above U+10FFFF
    ],
)
def test_invalid_utf8_bytes(frame: bytes, where: str) -> None:
    kind, code, message = classify_frame(frame, LIMIT)
    assert (kind, code) == ("invalid", "invalid_utf8")
    assert where in message


def test_str_with_lone_surrogate_is_invalid_utf8() -> None:
    frame = b'{"text":"\xff"}'.decode("utf-8", "surrogateescape")
    assert classify_frame(frame, LIMIT)[:2] == ("invalid", "invalid_utf8")


# ---- numbers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [
        "0", "-0", "1", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
        "18446744073709551615", "18446744073709551616", "-9223372036854775809", "123456789012345678901234567890",
        "0.0", "-0.0", "1.5", "1e2", "1E+2", "1e-2", "0.1", "2.2250738585072011e-308", "4.9e-324",
        "1.7976931348623157e308", "1e400", "-1e400", "1e-400", "3.141592653589793238462643383279",
    ],
)
def test_numbers_match_json_loads(literal: str) -> None:
    frame = '{"n": %s}' % literal
    assert same(classify(frame)[2], json.loads(frame))


def test_duplicate_keys_last_wins() -> None:
    frame = '{"type":"flush","a":1,"type":"Speak","a":2}'
    assert same(classify(frame), ("native", "Speak", json.loads(frame)))
    assert classify('{"type":"Speak","type":"flush"}')[:2] == ("command", "flush")
    assert classify('{"type":"flush","type":1}')[:2] == ("native", None)


# ---- arguments ---------------------------------------------------------------


def test_unknown_endpoint() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown endpoint 'TTS'|unknown endpoint \"TTS\""):
        classify_frame("{}", LIMIT, "TTS")
    assert issubclass(InvalidArgumentError, NativeError)
    assert issubclass(InvalidArgumentError, ValueError)


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_max_bytes_must_be_positive(max_bytes: int) -> None:
    with pytest.raises(InvalidArgumentError, match="max_bytes"):
        classify_frame("{}", max_bytes)


@pytest.mark.parametrize("frame", [bytearray(b"{}"), memoryview(b"{}"), 42, None])
def test_frame_must_be_str_or_bytes(frame: object) -> None:
    with pytest.raises(TypeError):
        classify_frame(frame, LIMIT)  # type: ignore[arg-type]


def test_keyword_arguments() -> None:
    assert classify_frame(frame='{"type":"ping"}', max_bytes=100, endpoint="stt")[:2] == ("command", "ping")


# ---- properties --------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
type_values = st.sampled_from(TTS_COMMANDS + STT_COMMANDS + ["Speak", "control", "Flush", ""]) | json_values


@st.composite
def json_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
    if draw(st.booleans()):
        obj["type"] = draw(type_values)
    return obj


@given(
    obj=json_objects(),
    ensure_ascii=st.booleans(),
    indent=st.none() | st.integers(0, 2),
    endpoint=st.sampled_from(["tts", "stt"]),
)
@settings(max_examples=300, deadline=None)
def test_objects_agree_with_json_loads(obj: dict[str, Any], ensure_ascii: bool, indent: int | None, endpoint: str) -> None:
    frame = json.dumps(obj, ensure_ascii=ensure_ascii, indent=indent)
    kind, name, fields = classify(frame, max_bytes=1 << 20, endpoint=endpoint)
    expected = json.loads(frame)
    assert same(fields, expected)
    type_ = expected.get("type")
    commands = TTS_COMMANDS if endpoint == "tts" else STT_COMMANDS
    if isinstance(type_, str) and type_ in commands:
        assert (kind, name) == ("command", type_)
    else:
        assert (kind, name) == ("native", type_ if isinstance(type_, str) else None)


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _json_loads_outcome(text: str) -> tuple[str, Any, Any] | None:
    """What classify_frame should say, from json.loads; None where they differ by design."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return None
    except ValueError:
        return ("native", None, None)
    if re.search(r"\\u[dD][89a-fA-F]", text):
        return None  # maybe a lone surrogate escape: refused by classify_frame
    if not isinstance(value, dict):
        return ("invalid", "invalid_message", None)
    type_ = value.get("type")
    if isinstance(type_, str) and type_ in TTS_COMMANDS:
        return ("command", type_, value)
    return ("native", type_ if isinstance(type_, str) else None, value)


json_ish_text = st.text(alphabet='{}[]":,0123456789-+.eE \t\n\rtruefalsnl\\/ubx\u00e9', max_size=40)


@given(text=st.one_of(st.text(max_size=40), json_ish_text, json_values.map(json.dumps)))
@settings(max_examples=500, deadline=None)
def test_any_text_agrees_with_json_loads(text: str) -> None:
    got = classify(text, max_bytes=1 << 20)
    expected = _json_loads_outcome(text)
    if expected is None:
        return
    if expected[0] == "invalid":
        assert got[:2] == expected[:2]
    else:
        assert same(got, expected), (text, got, expected)


@given(data=st.binary(max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_bytes_agree_with_str(data: bytes) -> None:
    got = classify_frame(data, LIMIT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        assert got[:2] == ("invalid", "invalid_utf8")
    else:
        assert same(got, classify_frame(text, LIMIT))
