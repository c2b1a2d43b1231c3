"""Type stubs for the native core (rust/src). Checked against the built module by
``python -m mypy.stubtest slng_fast._native``."""

from typing import Any, Final, final

__all__ = [
    "__version__",
    "NativeError",
    "UnsupportedRateError",
    "UnsupportedFormatError",
    "PartialSampleError",
    "InvalidArgumentError",
    "PanicException",
    "_panic_for_tests",
    "AudioChunker",
    "AudioRelay",
    "DataPlane",
    "AudioUplink",
    "RelayReport",
    "audio_chunk_frame",
    "pcm16_to_mulaw",
    "mulaw_to_pcm16",
    "pcm16_to_alaw",
    "alaw_to_pcm16",
    "pcm16_to_f32",
    "f32_to_pcm16",
    "classify_frame",
    "refused_command",
    "TokenBuckets",
    "ConnectionCounter",
    "Resampler",
    "SUPPORTED_RATES",
    "MsgpackError",
    "KYUTAI_FRAME_SAMPLES",
    "msgpack_decode",
    "msgpack_encode",
    "kyutai_audio_frame",
    "kyutai_marker_frame",
]

__version__: Final[str]

# ---- errors (rust/src/error.rs, mapped in rust/src/py/mod.rs) ----------------

class NativeError(ValueError):
    """Base of every error raised by the native core."""

class UnsupportedRateError(NativeError): ...
class UnsupportedFormatError(NativeError): ...
class PartialSampleError(NativeError): ...
class InvalidArgumentError(NativeError): ...

class PanicException(BaseException):
    """What a panic in any native call raises (PyO3's ``pyo3_runtime.PanicException``):
    a bug in the native core. A BaseException, so ``except Exception`` lets it through;
    the gateway ends the one session or connection it happened in."""

def _panic_for_tests(message: str) -> None:
    """For the tests only: panic with ``message``, as a bug in the native core would."""

# ---- resampling (rust/src/resample.rs) ---------------------------------------

SUPPORTED_RATES: Final[tuple[int, ...]]

@final
class Resampler:
    """Streaming polyphase resampler for mono audio.

    Rates are any two of ``SUPPORTED_RATES`` (else ``UnsupportedRateError``);
    ``in_format``/``out_format`` are ``"pcm16"`` (signed 16-bit little-endian) or
    ``"f32"`` (float32 little-endian, full scale 1.0). Input may be split anywhere,
    even inside a sample: the output is the same as for the whole stream. Output
    sample ``k`` belongs to time ``k / out_rate`` (no group delay); a stream of
    ``n`` input samples gives ``ceil(n * out_rate / in_rate)`` output samples in
    all. Same rate in and out passes the audio through (converting the format).
    """

    def __new__(
        cls, in_rate: int, out_rate: int, in_format: str = "pcm16", out_format: str = "pcm16"
    ) -> Resampler: ...
    @property
    def in_rate(self) -> int: ...
    @property
    def out_rate(self) -> int: ...
    @property
    def delay_input_samples(self) -> int:
        """Input samples held back before the first output (the filter's look-ahead)."""
    @property
    def latency_seconds(self) -> float:
        """Design latency: the look-ahead plus the filters' largest pass-band group delay."""
    def process(self, data: bytes) -> bytes:
        """Resample ``data`` (any number of bytes); returns the output ready so far."""
    def flush(self) -> bytes:
        """Emit what is held back; the stream then starts anew.

        The tail is computed as if the input went on with silence; a trailing
        partial sample is dropped."""
    def reset(self) -> None:
        """Forget the stream (history and any partial sample) without output."""

# ---- sample formats and G.711 (rust/src/codec.rs) ----------------------------
#
# Bytes in, bytes out. PCM16 is signed 16-bit little-endian, f32 is float32
# little-endian, G.711 is one byte per sample. The G.711 functions are bit-exact
# with CPython's ``audioop`` (ITU-T G.711 tables). PCM16 input of an odd byte
# count, or f32 input that is not a multiple of 4 bytes, raises
# PartialSampleError.
#
# PCM16 <-> f32 uses the scale 32768: ``f = s / 32768`` (exact, so PCM16 maps onto
# [-1.0, 32767/32768]); back to PCM16 the value is clipped to [-1.0, 1.0], scaled
# by 32768, rounded to nearest (ties to even) and saturated to [-32768, 32767];
# NaN becomes 0. PCM16 -> f32 -> PCM16 is the identity.

def pcm16_to_mulaw(pcm: bytes) -> bytes: ...
def mulaw_to_pcm16(data: bytes) -> bytes: ...
def pcm16_to_alaw(pcm: bytes) -> bytes: ...
def alaw_to_pcm16(data: bytes) -> bytes: ...
def pcm16_to_f32(pcm: bytes) -> bytes: ...
def f32_to_pcm16(data: bytes) -> bytes: ...

# ---- chunking and audio_chunk frames (rust/src/chunker.rs) -------------------

@final
class AudioChunker:
    """Cuts a stream of audio pieces into chunks of whole samples, each at most
    ``max_chunk_bytes``; optionally wraps them as ``audio_chunk`` JSON frames.

    Pieces may have any size, even ending inside a sample. Every whole sample is
    handed out by the ``push`` that completes it (no waiting to fill a chunk);
    the chunks of all pushes followed by ``flush()`` are the input, byte for byte.

    ``sample_width`` is 1 (mu-law/A-law), 2 (PCM16) or 4 (f32), else
    InvalidArgumentError; so is a ``max_chunk_bytes`` that holds no whole sample,
    a zero ``sample_rate``, and a ``context_id`` with a lone surrogate.
    """

    def __new__(
        cls,
        max_chunk_bytes: int,
        sample_width: int = 2,
        sample_rate: int = 24000,
        context_id: str = "",
    ) -> AudioChunker: ...
    @property
    def max_chunk_bytes(self) -> int:
        """The largest chunk: ``max_chunk_bytes`` rounded down to whole samples."""
    @property
    def sample_width(self) -> int: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def pending(self) -> int:
        """Bytes held back because they do not yet make a whole sample."""
    @property
    def next_sequence(self) -> int:
        """The ``sequence`` of the next frame from ``push_frames`` (starts at 0)."""
    @next_sequence.setter
    def next_sequence(self, value: int) -> None: ...
    @property
    def context_id(self) -> str:
        """The ``context_id`` written into frames."""
    @context_id.setter
    def context_id(self, value: str) -> None: ...
    def push(self, data: bytes) -> list[bytes]:
        """Raw chunks of whole samples available so far (possibly none).

        A piece that is exactly one chunk is returned as the same object."""
    def push_frames(self, data: bytes) -> list[bytes]:
        """Like ``push`` but each chunk as a complete ``audio_chunk`` frame (UTF-8 JSON),
        numbered from ``next_sequence`` on."""
    def flush(self) -> bytes:
        """Return and drop the trailing bytes that make no whole sample."""

def audio_chunk_frame(
    data: bytes, sequence: int, context_id: str, sample_rate: int, sample_width: int = 2
) -> bytes:
    """The complete ``audio_chunk`` JSON text frame (UTF-8 bytes) for one chunk:

    ``{"type":"audio_chunk","data":"<base64>","sequence":N,"duration_ms":D,"context_id":"..."}``

    ``data`` is standard base64 with padding. ``duration_ms`` is
    ``samples * 1000 / sample_rate``: an integer when exact (``100``), otherwise
    rounded to 3 decimals, ties to even, trailing zeros dropped (``0.045``,
    ``20.5``). ``data`` must be whole samples (else PartialSampleError); a
    ``context_id`` with a lone surrogate is an InvalidArgumentError.
    """

# ---- client frames (rust/src/frames/) ----------------------------------------

def classify_frame(
    frame: str | bytes, max_bytes: int, endpoint: str = "tts"
) -> tuple[str, str | None, Any]:
    """Say what a client text frame is, parsing it once.

    (The third item is ``Any`` because its type follows from the first: a dict,
    None or a str, as below.)

    ``frame`` is the text frame as ``str``, or as ``bytes`` holding its raw UTF-8
    payload not yet validated (any other type raises TypeError). ``endpoint`` is ``"tts"`` or ``"stt"`` (anything else
    raises InvalidArgumentError); ``max_bytes`` must be > 0 (else
    InvalidArgumentError). Returns one of

      ``("command", name, fields: dict)``  a JSON object whose ``"type"`` is a
          unified command of this endpoint (tts: init, input_text, flush, stop,
          clear, configure, ping; stt: start, finalize, stop, ping), compared
          case-sensitively;
      ``("native", type_or_None, fields: dict)``  any other JSON object; the
          middle item is its ``"type"`` when that is a string, else None;
      ``("native", None, None)``  text that is not JSON;
      ``("invalid", code, message: str)``  with code
          ``"message_too_large"``  more than ``max_bytes`` UTF-8 bytes (checked
              first, before anything else);
          ``"invalid_utf8"``  bytes that are not UTF-8 (or a str holding lone
              surrogates, which has no UTF-8 form);
          ``"invalid_message"``  JSON that is not an object (``[1]``, ``42``,
              ``"x"``, ``true``, ``null``), or JSON refused: nested deeper than 64
              arrays/objects, an integer of more than 640 digits, or a ``\\u``
              escape of a lone surrogate.

    ``fields`` is the whole object (``"type"`` included) as ``json.loads`` would
    return it: ints of any size (up to 640 digits) stay ``int``, other numbers are
    ``float`` (``1e400`` is ``inf``), ``null`` is None; for a duplicate key the last
    value wins. Command names and common keys are interned strings.

    Not JSON, hence plain text: empty or whitespace-only text, broken JSON such as
    ``{"type": "init"``, a value followed by more text (``42 is the answer``), and
    what ``json.loads`` accepts beyond the standard (``NaN``, ``Infinity``).
    JSON whitespace (space, tab, CR, LF) around the value is allowed; any other
    leading or trailing white space makes the frame plain text.
    """

def refused_command(frame: str | bytes, endpoint: str = "tts") -> str | None:
    """The unified command that the top-level ``"type"`` of a frame refused by
    ``classify_frame`` as ``invalid_message`` names, or None.

    The scan is lenient (values are skipped by counting brackets, not judged), so
    the mode decision can tell a unified command carrying a refused value (a lone
    surrogate escape, deep nesting, a huge integer) from a provider's own message.
    The last ``"type"`` wins; a command name written with escapes is not recognised.
    Frames that are not UTF-8 give None; any other type than str/bytes raises
    TypeError, an unknown ``endpoint`` InvalidArgumentError.
    """

# ---- limits (rust/src/ratelimit.rs) ------------------------------------------

@final
class TokenBuckets:
    """Keyed token buckets: ``capacity`` tokens, refilled continuously at
    ``refill_per_second``; a new key starts full. Thread-safe.

    Time is passed in (monotonic seconds), never read. Time going backwards adds
    no tokens. Keys untouched for ``idle_seconds`` whose bucket would be full
    again are evicted lazily (a sweep every ``max(1024, len)`` calls of
    ``try_acquire``); such a key answers exactly as a new one. Every number must
    be finite and > 0 (InvalidArgumentError otherwise; ``now`` may be any finite
    number).
    """

    def __new__(cls, capacity: float, refill_per_second: float, idle_seconds: float = 600.0) -> TokenBuckets: ...
    @property
    def capacity(self) -> float:
        """The default capacity."""
    @property
    def refill_per_second(self) -> float:
        """The default refill rate."""
    @property
    def idle_seconds(self) -> float: ...
    def try_acquire(self, key: str, now: float, cost: float = 1.0) -> float:
        """0.0 when allowed (``cost`` tokens taken), else the seconds from ``now``
        until ``cost`` tokens will be there (> 0; nothing taken). Waiting that long
        is enough: a request short by at most 1e-9 tokens is allowed.

        ``math.inf`` when ``cost`` exceeds the key's capacity: it can never be
        allowed, so there is no ``retry_after_ms`` to give.
        """
    def set_limits(self, key: str, capacity: float, refill_per_second: float) -> None:
        """Give ``key`` its own limits. Tokens above the new capacity are dropped;
        a key not tracked yet starts full. A key with its own limits is never
        evicted; ``remove`` forgets it."""
    def limits(self, key: str) -> tuple[float, float]:
        """``(capacity, refill_per_second)`` that apply to ``key``."""
    def remove(self, key: str) -> bool:
        """Forget ``key`` (tokens and own limits); True if it was tracked."""
    def evict_idle(self, now: float) -> int:
        """Evict the idle keys now; returns how many (``try_acquire`` does this
        by itself from time to time)."""
    def __len__(self) -> int:
        """Number of tracked keys."""

@final
class ConnectionCounter:
    """Concurrent connections per key. Thread-safe; keys at zero take no memory."""

    def __new__(cls) -> ConnectionCounter: ...
    def acquire(self, key: str, limit: int) -> bool:
        """Count one more connection and return True if ``key`` has fewer than
        ``limit`` (> 0, else InvalidArgumentError); else False, nothing counted."""
    def release(self, key: str) -> bool:
        """Count one connection less; True if ``key`` had one. Releasing a key at
        zero is a no-op returning False (it never raises: it runs in cleanup)."""
    def count(self, key: str) -> int: ...
    def __len__(self) -> int:
        """Number of keys with at least one connection."""

# ---- MessagePack (rust/src/msgpack.rs) ---------------------------------------
#
# For the Kyutai STT dialect (moshi-server's asr-streaming protocol).

class MsgpackError(NativeError):
    """MessagePack that cannot be decoded, or a value that cannot be encoded."""

KYUTAI_FRAME_SAMPLES: Final[int]
"""Samples per 80 ms model step at 24 kHz (1920)."""

def msgpack_decode(data: bytes) -> Any:
    """The one MessagePack value that fills ``data``: maps -> dict (the last value
    of a duplicate key wins), arrays -> list, str, int, float (float32 and float64),
    bool, None, bin -> bytes.

    MsgpackError for: empty input, input ending inside a value, bytes after the
    value, the reserved byte 0xc1, extension types (timestamps included), strings
    that are not UTF-8, an array or map as a map key, nesting deeper than 64
    arrays/maps, and a length that cannot fit in the bytes left (refused before
    anything is allocated). Messages give the byte offset."""

def msgpack_encode(value: Any, single_float: bool = False) -> bytes:
    """MessagePack of None, bool, int (-2**63 .. 2**64-1), float (float64, or
    float32 if ``single_float``), str, bytes/bytearray (bin), list/tuple (array)
    and dict (map), each in its smallest encoding (with ``single_float`` a float is
    rounded to float32; one beyond float32's range becomes an infinity). TypeError for other types;
    MsgpackError for an int out of range, a str with lone surrogates, or nesting
    deeper than 64 lists/dicts."""

def kyutai_audio_frame(pcm_f32: bytes) -> bytes:
    """``{"type":"Audio","pcm":[...]}`` for float32 little-endian audio: a map of
    two entries, the samples as an array of MessagePack float32 (bits kept).
    PartialSampleError unless ``len(pcm_f32)`` is a multiple of 4."""

def kyutai_marker_frame(id: int) -> bytes:
    """``{"type":"Marker","id":id}`` (``id`` a signed 64-bit integer)."""

# ---- WebSocket framing (rust/src/ws/) ----------------------------------------
#
# Sans-I/O RFC 6455: bytes read go in, events come out; messages go in, the bytes
# to write come out. python/slng_fast/gateway/native_transport.py does the I/O.

from typing import ClassVar, TypeAlias  # noqa: E402 - beside the part that uses it

__all__ += [
    "TextMessage",
    "BinaryMessage",
    "InvalidTextMessage",
    "Ping",
    "Pong",
    "Close",
    "ProtocolViolation",
    "WsHandshakeError",
    "WsClosedError",
    "WsConnection",
    "WsRequest",
    "ws_parse_request",
    "ws_accept_key",
    "ws_accept_response",
    "ws_reject_response",
    "ws_encode_frame",
]

# The events of ``WsConnection.receive_data`` (rust/src/py/ws_events.rs): frozen,
# compared by value, matched by class (``case Close(code, reason):``).

@final
class TextMessage:
    """A complete text message (``data`` is a str, as in wsproto)."""
    __match_args__: ClassVar[tuple[str]] = ("data",)
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, data: str) -> TextMessage: ...
    @property
    def data(self) -> str: ...

@final
class BinaryMessage:
    """A complete binary message."""
    __match_args__: ClassVar[tuple[str]] = ("data",)
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, data: bytes) -> BinaryMessage: ...
    @property
    def data(self) -> bytes: ...

@final
class InvalidTextMessage:
    """A complete text message that is not UTF-8 (only with ``lenient_text``)."""
    __match_args__: ClassVar[tuple[str]] = ("data",)
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, data: bytes) -> InvalidTextMessage: ...
    @property
    def data(self) -> bytes: ...

@final
class Ping:
    """A ping; answer with ``send_pong(payload)``."""
    __match_args__: ClassVar[tuple[str]] = ("payload",)
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, payload: bytes) -> Ping: ...
    @property
    def payload(self) -> bytes: ...

@final
class Pong:
    """A pong."""
    __match_args__: ClassVar[tuple[str]] = ("payload",)
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, payload: bytes) -> Pong: ...
    @property
    def payload(self) -> bytes: ...

@final
class Close:
    """The peer's close frame (``code`` 1005 when it had none): answer with
    ``send_close``, then close the stream. Nothing after it is read."""
    __match_args__: ClassVar[tuple[str, str]] = ("code", "reason")
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, code: int, reason: str) -> Close: ...
    @property
    def code(self) -> int: ...
    @property
    def reason(self) -> str: ...

@final
class ProtocolViolation:
    """The peer broke the protocol: send ``send_close(close_code, reason)``, then close
    the stream. Nothing after it is read."""
    __match_args__: ClassVar[tuple[str, str]] = ("close_code", "reason")
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, close_code: int, reason: str) -> ProtocolViolation: ...
    @property
    def close_code(self) -> int: ...
    @property
    def reason(self) -> str: ...

_WsEvent: TypeAlias = (TextMessage | BinaryMessage | InvalidTextMessage | Ping | Pong | Close
                      | ProtocolViolation)
"""What ``receive_data`` returns a list of (a name for type checkers only)."""

class WsHandshakeError(NativeError):
    """An HTTP request that is not an acceptable WebSocket handshake;
    ``args == (status, reason)``, the status to answer with (400, 405, 426, 431)."""

class WsClosedError(NativeError):
    """A frame was to be sent after our close frame."""

@final
class WsConnection:
    """One connection's framing. Server side (the default): client frames must be
    masked, ours are not; ``client=True``: ours are masked with random masks and
    the server's must not be.

    ``receive_data`` returns every event that the bytes received so far complete, as
    the event classes above (``TextMessage``, ``BinaryMessage``, ``InvalidTextMessage``,
    ``Ping``, ``Pong``, ``Close``, ``ProtocolViolation``). After a ``Close`` or
    ``ProtocolViolation`` further input is ignored.

    Protocol errors: 1002 for reserved bits/opcodes, masking the wrong way,
    fragmented or over-125-byte control frames, continuation misuse, a 1-byte close
    payload or a close code that may not be sent; 1007 for a text message or close
    reason that is not UTF-8 (without ``lenient_text``; fragments are checked as
    they arrive); 1009 for a message above ``max_message_bytes`` (refused from the
    frame header, before its payload arrives)."""

    def __new__(cls, max_message_bytes: int = 4194304, *, client: bool = False,
                lenient_text: bool = False) -> WsConnection: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def client(self) -> bool: ...
    @property
    def lenient_text(self) -> bool: ...
    @property
    def close_sent(self) -> bool:
        """``send_close`` has produced our close frame."""
    @property
    def close_received(self) -> bool:
        """The peer's close frame has been read."""
    @property
    def failed(self) -> bool:
        """A ``protocol_error`` event was returned."""
    @property
    def buffered(self) -> int:
        """Bytes received that are not yet part of a complete frame."""
    def receive_data(self, data: bytes) -> list[_WsEvent]: ...
    def send_text(self, text: str) -> bytes:
        """One unfragmented text frame. WsClosedError after ``send_close``; a str
        with lone surrogates raises UnicodeEncodeError."""
    def send_text_utf8(self, data: bytes) -> bytes:
        """A text frame whose payload is already UTF-8 (ValueError if it is not)."""
    def send_binary(self, data: bytes) -> bytes: ...
    def send_ping(self, payload: bytes = b"") -> bytes:
        """InvalidArgumentError for a payload above 125 bytes."""
    def send_pong(self, payload: bytes = b"") -> bytes: ...
    def send_close(self, code: int | None = 1000, reason: str = "") -> bytes:
        """Our close frame (no payload for ``None`` or 1005; the reason is cut to
        123 bytes at a character boundary); ``b""`` once it was already produced.
        InvalidArgumentError for a code that may not be sent (1004-1006, 1015,
        below 1000, 1016-2999, 5000 and up)."""

@final
class WsRequest:
    """An HTTP request head. ``is_websocket`` for a valid upgrade (GET, HTTP/1.1,
    ``Upgrade: websocket``, ``Connection: upgrade``, version 13, a 16-byte key);
    False for a plain HTTP request, which the caller answers itself."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str:
        """The request target, query string included."""
    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every header line in order, values read as Latin-1."""
    @property
    def subprotocols(self) -> list[str]: ...
    @property
    def key(self) -> str | None:
        """Sec-WebSocket-Key, for a valid upgrade."""
    @property
    def is_websocket(self) -> bool: ...
    @property
    def consumed(self) -> int:
        """Length of the head: the bytes after it are WebSocket frames already."""
    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive)."""

def ws_parse_request(data: bytes) -> WsRequest | None:
    """The request head at the start of ``data``; None while it is incomplete
    (WsHandshakeError 431 once more than 16 KiB arrived without its end); an
    upgrade request with a bad method, version or key raises WsHandshakeError."""

def ws_accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for ``key``."""

def ws_accept_response(key: str, subprotocol: str | None = None) -> bytes:
    """The ``101 Switching Protocols`` response head."""

def ws_reject_response(status: int, body: bytes = b"",
                       headers: list[tuple[str, str]] = ...) -> bytes:
    """A whole HTTP/1.1 response with ``Content-Length`` and ``Connection: close``
    (a 426 also says ``Sec-WebSocket-Version: 13``)."""

def ws_encode_frame(opcode: int, payload: bytes, fin: bool = True,
                    mask: bytes | None = None) -> bytes:
    """One raw frame of any opcode 0..15, masked with the 4-byte ``mask`` if given:
    for tests and raw clients."""


# ---- the data plane (rust/src/relay.rs) ----------------------------------------

@final
class RelayReport:
    """What one ``AudioRelay.feed`` (TTS) or ``AudioUplink.feed`` (STT) carried."""
    @property
    def messages(self) -> int:
        """Source messages taken (upstream's for TTS, client's for STT)."""
    @property
    def in_bytes(self) -> int:
        """Bytes of source audio taken."""
    @property
    def out_bytes(self) -> int:
        """Bytes of converted audio: client audio handed to the chunker (TTS), the
        model's audio (STT)."""
    @property
    def chunks(self) -> int:
        """Messages framed for the sink: ``audio_chunk`` frames (TTS), the provider's
        audio messages (STT)."""
    @property
    def next_sequence(self) -> int:
        """The sequence number of the next frame (TTS; 0 for STT)."""

@final
class DataPlane:
    """One worker's data plane (Linux only): an epoll set over the source sockets of
    the lent streams (a TTS relay's upstream, an STT uplink's client); ``serve``
    carries every ready one (read, the state's ``feed``, write to the sink's socket) in
    one call, holding the GIL (see docs/decisions.md)."""
    def __new__(cls) -> DataPlane: ...
    def fileno(self) -> int:
        """The epoll descriptor: readable while a lent stream has input."""
    def __len__(self) -> int: ...
    def lend(self, source_fd: int, source: WsConnection, state: AudioRelay | AudioUplink,
             sink_fd: int, sink: WsConnection) -> int:
        """Lend a stream (its descriptors must stay open until it leaves): its key."""
    def take_back(self, key: int) -> bool:
        """Take a stream back; False if it had already left the plane."""
    def serve(self) -> list[tuple[int, RelayReport, float | None,
                                  tuple[bool, bytes, str | None, str | None,
                                        BaseException | None] | None]]:
        """Serve every ready stream once: ``(key, report, seconds, outcome)`` each, for
        streams that carried something; ``seconds`` from the read to the frames written
        (None if none were), ``outcome`` None while the stream stays lent, else
        ``(handed_back, unwritten, sink_error, ended, error)`` and it has left."""

@final
class AudioRelay:
    """One TTS stream's output state: provider audio (``in_rate``, ``in_format``) to
    ``audio_chunk`` frames in the client's ``codec`` and ``sample_rate``, at most
    ``max_chunk_bytes`` of audio each. ``push`` (the session's path) and ``feed`` (the
    data plane) run the same conversion on the same state."""
    def __new__(cls, *, codec: str, sample_rate: int, max_chunk_bytes: int, context_id: str,
                in_rate: int, in_format: str = "pcm16", framing: str = "binary",
                framing_context: str | None = None, next_sequence: int = 0) -> AudioRelay: ...
    @property
    def framing(self) -> str:
        """Which upstream messages ``feed`` owns: ``"binary"`` (every binary message),
        ``"elevenlabs"`` (JSON that is only base64 PCM16 of one context), ``"cartesia"``
        (a ``chunk`` of one context) or ``"kyutai"`` (MessagePack ``Audio`` of float32)."""
    def set_framing(self, framing: str, context_id: str | None = None) -> None:
        """Own other messages from now on (``context_id``: the provider's utterance, for
        ``"elevenlabs"`` and ``"cartesia"``); the conversion state stays as it is."""
    @property
    def in_rate(self) -> int: ...
    @property
    def in_format(self) -> str: ...
    @property
    def next_sequence(self) -> int: ...
    def push(self, data: bytes) -> tuple[list[bytes], int]:
        """The frames (UTF-8 JSON) for one piece of provider audio, and the bytes of
        client audio it made."""
    def end_utterance(self) -> tuple[list[bytes], int]:
        """The frames of what the resampler holds back; a partial sample is dropped."""
    def drop_audio(self) -> None:
        """Forget the audio in flight."""
    def feed(self, upstream: WsConnection, data: bytes,
             client: WsConnection) -> tuple[bytes, RelayReport, bool]:
        """Parse ``data`` read from ``upstream``; frame every message this relay owns as
        text for ``client``. Returns (wire bytes for the client, the report, whether it
        met a message it does not own: that one and every later one stay queued in
        ``upstream``, for ``upstream.receive_data(b"")``). Runs without the GIL."""

@final
class AudioUplink:
    """One STT stream's input state: client audio (``codec`` at ``sample_rate``) to the
    model's (``model_rate``, ``model_format``), in the provider's ``framing``:
    ``"binary"`` (one binary message of converted audio per client message that makes
    any) or ``"kyutai"`` (MessagePack ``Audio`` of exactly 1920 float32 samples, less
    held back). ``push`` (the session's path) and ``feed`` (the data plane) run the same
    conversion on the same state."""
    def __new__(cls, *, codec: str, sample_rate: int, model_rate: int,
                model_format: str = "pcm16", framing: str = "binary",
                max_message_bytes: int = 4194304) -> AudioUplink: ...
    @property
    def framing(self) -> str: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def model_rate(self) -> int: ...
    @property
    def max_message_bytes(self) -> int:
        """A longer binary message is not owned by ``feed`` (the session refuses it)."""
    def push(self, data: bytes) -> bytes:
        """The model's audio for one client audio message (not framed)."""
    def flush(self) -> bytes:
        """What the resampler holds back."""
    @property
    def held(self) -> bytes:
        """Converted audio the framing holds back (``kyutai``: under one message)."""
    def set_held(self, held: bytes) -> None:
        """Go on from audio the session's own framing held back."""
    def take_held(self) -> bytes:
        """What the framing holds back, leaving nothing."""
    def feed(self, client: WsConnection, data: bytes,
             upstream: WsConnection) -> tuple[bytes, RelayReport, bool]:
        """Parse ``data`` read from ``client``; frame every binary message this uplink
        owns (no longer than ``max_message_bytes``) for ``upstream`` (masked). Returns
        (wire bytes for the upstream, the report, whether it met a message it does not
        own: that one and every later one stay queued in ``client``, for
        ``client.receive_data(b"")``). Runs without the GIL."""
