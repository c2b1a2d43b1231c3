"""What the live fuzzer sends: seeded generators of hostile connections. Pure (no I/O):
each generator turns a ``random.Random`` into a ``Case``, the frames of one connection
and what the fuzzer may expect back. ``bench/fuzz.py`` runs them against a gateway."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import rawws

# -- the contract (PROTOCOL.md): what may come back ---------------------------------
EVENT_TYPES = frozenset({
    "ready", "audio_chunk", "audio_end", "error", "pong", "word_timestamps", "session_ended",
    "transcript", "final_transcript", "provider_switched",
})
ERROR_CODES = frozenset({
    "auth_failed", "too_many_connections", "rate_limited", "message_too_large", "text_too_long",
    "invalid_message", "unknown_command", "already_initialized", "mixed_protocol",
    "invalid_parameter", "provider_unavailable", "provider_error", "internal_error",
})
END_REASONS = frozenset({
    "client_closed", "idle_timeout", "max_duration", "upstream_closed", "server_shutdown", "error",
})
# Section 7, plus the frame layer's RFC 6455 answers to broken frames (1002 protocol error,
# 1009 too big on the trio-websocket transport), the provider close codes section 8
# documents for native sessions (1003), and 1005/1006: no code / no close frame at all
# (our own abrupt disconnects).
CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1005, 1006, 1008, 1009, 1011, 1013,
                         4000, 4001, 4002})
# What the gateway says when it breaks: documented, but never an answer to bad input.
GATEWAY_FAULTS = frozenset({"internal_error"})

TTS_COMMANDS: dict[str, dict[str, Any]] = {
    "init": {"voice_id": "en", "codec": "pcm16", "sample_rate_hz": 16000, "language": "en"},
    "input_text": {"text": "Hello there. "},
    "flush": {},
    "stop": {},
    "clear": {},
    "configure": {"voice_id": "en", "language": "en"},
    "ping": {},
}
TTS_FIELDS = {
    "init": ["voice_id", "voice", "context_id", "codec", "encoding", "sample_rate_hz",
             "sample_rate", "language", "style", "voice_settings", "word_timestamps",
             "fallback", "model_id", "generation_config", "buffer_size", "max_tokens",
             "repetition_penalty", "temperature", "top_p"],
    "input_text": ["text"],
    "flush": ["context_id"],
    "stop": ["context_id"],
    "clear": ["context_id"],
    "configure": ["voice_id", "voice", "style", "language", "codec", "sample_rate_hz"],
    "ping": ["timestamp"],
}
STT_COMMANDS: dict[str, dict[str, Any]] = {
    "start": {"sample_rate": 16000, "encoding": "pcm16", "language": "en"},
    "finalize": {},
    "stop": {},
    "ping": {},
}
STT_FIELDS = {
    "start": ["sample_rate", "sample_rate_hz", "encoding", "codec", "language", "context_id",
              "fallback", "model"],
    "finalize": ["context_id"],
    "stop": ["context_id"],
    "ping": ["timestamp"],
}

# Provider-native messages (PROTOCOL.md section 8), for protocol mixing.
NATIVE_MESSAGES = [
    '{"text":" "}', '{"text":"Hello there ","try_trigger_generation":true}',
    '{"text":" ","flush":true,"context_id":"c1"}', '{"context_id":"c1","close_context":true}',
    '{"type":"Speak","text":"Hello there"}', '{"type":"Flush"}', '{"type":"Clear"}',
    '{"type":"Close"}', '{"type":"KeepAlive"}', '{"type":"control","action":"flush"}',
    '{"type":"control","action":"stop"}', '{"voice":"en","buffer_size":10}', "__END__",
    "Hello world", "END_OF_AUDIO", '{"uid":"x","language":"en","task":"transcribe"}',
    '{"model_id":"sonic","transcript":"Hi","continue":false,"context_id":"c1",'
    '"voice":{"mode":"id","id":"v"},"output_format":{"container":"raw"}}',
    '{"context_id":"c1","cancel":true}', '{"type":"Audio","pcm":[0.0,0.1]}',
    '{"type":"Marker","id":1}', '{"type":"CloseStream"}', '{"type":"Finalize"}',
]
# The first frame a native client of each provider sends.
NATIVE_OPENERS = {
    "espeak": ['{"voice":"en"}', "Hello world"],
    "elevenlabs": ['{"text":" ","voice_settings":{"stability":0.5}}', '{"text":" "}'],
    "deepgram": ['{"type":"Speak","text":"Hello there"}'],
    "pocketsphinx": ["hello"],
    "whisper": ['{"uid":"fuzz","language":"en","task":"transcribe","use_vad":false}'],
}

UNICODE_EDGES = [
    "", " ", "\u0000", "a\u0000b", "\u202eevil\u202c", "\u200f\u05e9\u05dc\u05d5\u05dd",
    "\u0645\u0631\u062d\u0628\u0627", "\U0001f600" * 40, "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\ufeff", "\uffff", "\U0010ffff", "e\u0301" * 60, "\n\t\r", "\x7f\x1b[31m", "null",
    "%s%n%x", "../../etc/passwd", "\u00a0\u2028\u2029", "\u0e01\u0e34\u0e4a" * 30,
]


@dataclass(frozen=True)
class Raw:
    """A JSON value written as is: ``strict`` when it is still RFC 8259 JSON (only
    refused by the gateway), else it makes the whole frame plain text."""

    text: str
    strict: bool = True


RAW_VALUES = [
    Raw('"\\udfff"'), Raw('"\\ud800"'), Raw('"ab\\udbffcd"'), Raw('"\\u0000"'),
    Raw("9" * 700), Raw("-" + "1" * 650), Raw("1" * 600), Raw("1e400"), Raw("-0"),
    Raw("[" * 70 + "]" * 70), Raw("[" * 64 + "]" * 64), Raw('{"a":' * 66 + "1" + "}" * 66),
    Raw("0.00000000000000000000000000001"), Raw("NaN", strict=False),
    Raw("Infinity", strict=False), Raw("-Infinity", strict=False), Raw("'single'", strict=False),
]


def weird_value(rng: random.Random, big: bool) -> Any:
    """A value of the wrong type, an extreme, a unicode edge case or a huge string."""
    roll = rng.random()
    if roll < 0.25:
        return rng.choice([None, True, False, 0, -1, 1, 2**31, 2**63, 2**64, -(2**63) - 1,
                           10**200, 1e308, -1e308, 5e-324, 0.5, -0.0, 16000.5, 8000, 48000,
                           7999, 96000, [], {}, [[[]]], {"a": {"b": {"c": None}}},
                           list(range(200)), ["en"], {"voice_id": "en"}])
    if roll < 0.5:
        return rng.choice(UNICODE_EDGES)
    if roll < 0.7:
        return rng.choice(RAW_VALUES)
    if roll < 0.85:
        return rng.choice(["pcm16", "mulaw", "alaw", "opus", "PCM16", "en", "xx", "en-us",
                           "nobody", "hi", "", "a" * 300, "tts", "stt"])
    sizes = [500, 1999, 2001, 9999, 10_001, 20_000] + ([140_000] if big else [])
    return rng.choice("xé\U0001f600 ") * rng.choice(sizes)


def dumps(obj: dict[str, Any]) -> tuple[str, bool]:
    """JSON text of ``obj`` where ``Raw`` values are written as is; and whether the text
    is still strict JSON."""
    raws: dict[str, Raw] = {}

    def swap(value: Any) -> Any:
        if isinstance(value, Raw):
            token = f"__raw_{len(raws)}__"
            raws[token] = value
            return token
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    try:
        text = orjson.dumps(swap(obj), option=orjson.OPT_PASSTHROUGH_SUBCLASS).decode()
    except orjson.JSONEncodeError:  # ints beyond 64 bits
        import json
        text = json.dumps(swap(obj), ensure_ascii=False)
    for token, raw in raws.items():
        text = text.replace(f'"{token}"', raw.text)
    return text, all(r.strict for r in raws.values())


Frame = tuple[str, "str | bytes"]  # ("text", str) | ("binary", bytes) | ("wire", bytes)


@dataclass
class Case:
    category: str
    endpoint: str  # provider/model name
    kind: str  # "tts" | "stt"
    frames: list[Frame] = field(default_factory=list)
    unified: bool | None = None  # the mode the first frame chooses; None: not predicted
    raw: bool = False  # frames are wire bytes for rawws
    key: str = "fuzz"  # which key: "fuzz" (limits raised), "pro", "free"
    close: str = "clean"  # "clean" | "abrupt"
    label: str = ""  # seed:worker:n, for --replay
    extra_closes: frozenset[int] = frozenset()  # close codes documented for this case only

    def text(self, s: str) -> None:
        self.frames.append(("text", s))

    def binary(self, b: bytes) -> None:
        self.frames.append(("binary", b))


TTS_ENDPOINTS = ["espeak", "espeak", "elevenlabs", "deepgram"]
STT_ENDPOINTS = ["pocketsphinx", "pocketsphinx", "whisper"]


def _commands(kind: str) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    return (TTS_COMMANDS, TTS_FIELDS) if kind == "tts" else (STT_COMMANDS, STT_FIELDS)


def _valid(kind: str, name: str) -> str:
    commands, _ = _commands(kind)
    return orjson.dumps({"type": name, **commands[name]}).decode()


def _opener(case: Case) -> str:
    """A valid ``init``/``start`` for the case's endpoint (only eSpeak knows voice ``en``)."""
    if case.kind == "stt":
        return _valid("stt", "start")
    init = dict(TTS_COMMANDS["init"])
    if case.endpoint != "espeak":
        init.pop("voice_id")
    return orjson.dumps({"type": "init", **init}).decode()


def _pcm(rng: random.Random, n: int) -> bytes:
    if rng.random() < 0.5:
        return bytes(n)
    return rng.randbytes(n)


def _new_case(rng: random.Random, category: str) -> Case:
    kind = rng.choice(["tts", "tts", "stt"])
    endpoint = rng.choice(TTS_ENDPOINTS if kind == "tts" else STT_ENDPOINTS)
    roll = rng.random()
    key = "free" if roll < 0.05 else "pro" if roll < 0.15 else "fuzz"
    close = "abrupt" if rng.random() < 0.25 else "clean"
    return Case(category, endpoint, kind, key=key, close=close)


def mutated_command(rng: random.Random, case: Case, first: bool) -> tuple[str, bool | None]:
    """One command of the endpoint with 1-3 fields mutated (or its ``type``); the text and
    whether it is a unified command that the gateway must treat as one."""
    commands, fields = _commands(case.kind)
    name = rng.choice(list(commands))
    body: dict[str, Any] = {"type": name, **commands[name]}
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.1:
            body["type"] = weird_value(rng, big=False)
        elif roll < 0.2:
            body[rng.choice(["", "typ", "TYPE", "\u0000", "x" * 100, "\U0001f600"])] = \
                weird_value(rng, big=False)
        elif roll < 0.25 and len(body) > 1:
            body.pop(rng.choice([k for k in body if k != "type"]))
        else:
            body[rng.choice(fields[name])] = weird_value(rng, big=not first)
    text, strict = dumps(body)
    unified = strict and isinstance(body.get("type"), str) and body["type"] in commands
    return text, unified


def gen_mutated(rng: random.Random) -> Case:
    case = _new_case(rng, "mutated_command")
    if rng.random() < 0.5:
        case.text(_opener(case))
        case.unified = True
    else:
        text, unified = mutated_command(rng, case, first=True)
        case.text(text)
        case.unified = unified
    for _ in range(rng.randint(2, 25)):
        case.text(mutated_command(rng, case, first=False)[0])
    if rng.random() < 0.5:
        case.text(_valid(case.kind, "input_text" if case.kind == "tts" else "finalize"))
        if case.kind == "tts":
            case.text(_valid("tts", "flush"))
    return case


def gen_out_of_order(rng: random.Random) -> Case:
    case = _new_case(rng, "out_of_order")
    commands, _ = _commands(case.kind)
    names = list(commands)
    for n in range(rng.randint(3, 30)):
        if case.kind == "stt" and rng.random() < 0.3:
            case.binary(_pcm(rng, rng.choice([320, 640, 3200])))
            case.unified = True if n == 0 else case.unified
            continue
        name = rng.choice(names)
        case.text(_opener(case) if name in ("init", "start") else _valid(case.kind, name))
        if n == 0:
            case.unified = True
    return case


def gen_interleaved_binary(rng: random.Random) -> Case:
    case = _new_case(rng, "interleaved_binary")
    case.text(_opener(case))
    case.unified = True
    limit = 64 * 1024
    for _ in range(rng.randint(3, 40)):
        roll = rng.random()
        if roll < 0.6:
            size = rng.choice([0, 1, 3, 320, 641, 1600, 3200, 8000, limit - 1, limit])
            if rng.random() < 0.02:
                size = limit + rng.randint(1, 5000)  # over the audio frame limit: 4002
            case.binary(_pcm(rng, size))
        elif case.kind == "tts":
            case.text(_valid("tts", rng.choice(["input_text", "flush", "ping", "stop", "clear"])))
        else:
            case.text(_valid("stt", rng.choice(["finalize", "ping", "finalize"])))
    return case


def _garbage_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        return "".join(chr(rng.randint(32, 0x2FF)) for _ in range(rng.randint(0, 200)))
    if roll < 0.35:
        return _valid("tts", "init")[: rng.randint(0, 20)]  # truncated JSON
    if roll < 0.5:
        return rng.choice(["[]", "[1,2]", "42", '"x"', "true", "null", "{}", "{ }", "[{}]",
                           '{"type":null}', '{"type":[]}', '{"type":{"type":"init"}}',
                           '{"type":"init",}', "{'type':'init'}", '{"type":"init"} trailing',
                           "\u00a0{\"type\":\"ping\"}", '{"type":"ping"}\u000c'])
    if roll < 0.65:
        return "[" * rng.randint(60, 3000) + "]" * rng.randint(0, 3000)
    if roll < 0.75:
        return '{"type":"ping","n":' + "9" * rng.randint(600, 5000) + "}"
    if roll < 0.85:
        return rng.choice(UNICODE_EDGES) * rng.randint(1, 50)
    return "".join(chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                   for _ in range(rng.randint(1, 300)))


def gen_garbage(rng: random.Random) -> Case:
    case = _new_case(rng, "garbage")
    if rng.random() < 0.5:
        case.text(_opener(case))
        case.unified = True
    for _ in range(rng.randint(1, 20)):
        if rng.random() < 0.25:
            case.binary(rng.randbytes(rng.randint(0, 5000)))
        else:
            case.text(_garbage_text(rng))
    return case


def gen_protocol_mixing(rng: random.Random) -> Case:
    case = _new_case(rng, "protocol_mixing")
    if rng.random() < 0.5:  # native messages in a unified session
        case.text(_opener(case))
        case.unified = True
        for _ in range(rng.randint(2, 15)):
            case.text(rng.choice(NATIVE_MESSAGES))
    else:  # unified commands (and other providers' messages) in a native session
        case.text(rng.choice(NATIVE_OPENERS[case.endpoint]))
        case.unified = False
        commands, _ = _commands(case.kind)
        for _ in range(rng.randint(2, 15)):
            if rng.random() < 0.5:
                case.text(_valid(case.kind, rng.choice(list(commands))))
            else:
                case.text(rng.choice(NATIVE_MESSAGES))
        if case.endpoint == "espeak":
            case.text('{"type":"control","action":"flush"}')
    return case


def _raw_text(payload: str | bytes) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return rawws.frame(rawws.TEXT, data)


def gen_raw_frames(rng: random.Random) -> Case:
    """Broken WebSocket frames after a valid opening command."""
    case = _new_case(rng, "raw_frames")
    case.raw = True
    case.unified = True
    case.frames.append(("wire", _raw_text(_opener(case))))
    ping = _valid(case.kind, "ping").encode()
    choices: list[Callable[[], bytes]] = [
        lambda: rawws.frame(rawws.TEXT, ping, rsv=rng.randint(1, 7)),
        lambda: rawws.frame(rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]), ping),
        lambda: rawws.frame(rawws.TEXT, ping, mask=False),
        lambda: rawws.frame(rawws.CONT, ping),
        lambda: rawws.frame(rawws.TEXT, ping[:5], fin=False) + rawws.frame(rawws.CONT, ping[5:]),
        lambda: (rawws.frame(rawws.TEXT, ping[:5], fin=False)
                 + rawws.frame(rawws.TEXT, ping[5:])),
        lambda: (rawws.frame(rawws.TEXT, ping[:5], fin=False)
                 + rawws.frame(rawws.PING, b"mid") + rawws.frame(rawws.CONT, ping[5:])),
        lambda: rawws.frame(rawws.PING, b"x" * rng.choice([126, 200, 1000])),
        lambda: rawws.frame(rawws.PING, b"p", fin=False),
        lambda: rawws.frame(rawws.CLOSE, b"\x03"),
        lambda: rawws.frame(rawws.CLOSE, struct.pack(">H", rng.choice([0, 999, 1004, 1005,
                                                                      1006, 1015, 2999, 5000]))),
        lambda: _raw_text(b'{"type":"input_text","text":"caf\xc3"}'),
        lambda: _raw_text(b'{"type":"ping"}\xed\xa0\x80'),
        lambda: rawws.frame(rawws.BINARY, b"", length=rng.choice([2**63 - 1, 2**40, 10**7])),
        lambda: rawws.frame(rawws.TEXT, ping, length=len(ping) + 50),  # then the TCP ends
        lambda: bytes([0x81]),  # half a header
        lambda: (rawws.frame(rawws.TEXT, b"x" * 70_000, fin=False)
                 + rawws.frame(rawws.CONT, b"x" * 70_000)),
        lambda: _raw_text(ping) + rawws.frame(rawws.PONG, b"unsolicited"),
    ]
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 1 / (len(choices) + 1):
            # A close whose reason is not UTF-8: RFC 6455's answer is 1007 (the contract's
            # 1008 is for text messages), so only here is 1007 documented.
            case.frames.append(("wire", rawws.frame(rawws.CLOSE, b"\x03\xe8\xff\xfe")))
            case.extra_closes = frozenset({1007})
        else:
            case.frames.append(("wire", rng.choice(choices)()))
    return case


GENERATORS: dict[str, Callable[[random.Random], Case]] = {
    "mutated_command": gen_mutated,
    "out_of_order": gen_out_of_order,
    "interleaved_binary": gen_interleaved_binary,
    "garbage": gen_garbage,
    "protocol_mixing": gen_protocol_mixing,
    "raw_frames": gen_raw_frames,
}
WEIGHTS = {"mutated_command": 4, "out_of_order": 2, "interleaved_binary": 2, "garbage": 2,
           "protocol_mixing": 2, "raw_frames": 1}


def make_case(rng: random.Random) -> Case:
    names = list(GENERATORS)
    name = rng.choices(names, weights=[WEIGHTS[n] for n in names])[0]
    return GENERATORS[name](rng)
