"""AudioChunker and audio_chunk frames of the native core (rust/src/chunker.rs)."""

from __future__ import annotations

import base64
import json
import re
from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native
from slng_fast._native import AudioChunker, audio_chunk_frame

FAST = settings(max_examples=200, deadline=None)

widths = st.sampled_from([1, 2, 4])
rates = st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]) | st.integers(1, 200_000)
# Any text a Python str can hold except lone surrogates (which have no UTF-8 form).
context_ids = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "ctx-1", 'q"uo\\te', "\x00\x01\x1f\x7f\n\r\t\b\f", "é€😀\u2028\u2029", "</script>"]
)


def expected_duration(samples: int, rate: int) -> int | float:
    """samples * 1000 / rate ms: an int when exact, else rounded to 3 decimals (ties to even)."""
    exact = Fraction(samples * 1000, rate)
    if exact.denominator == 1:
        return int(exact)
    thousandths = round(exact * 1000)  # round() on a Fraction rounds half to even
    whole, frac = divmod(thousandths, 1000)
    return whole if frac == 0 else float(f"{whole}.{frac:03d}")


def expected_frame(data: bytes, sequence: int, context_id: str, rate: int, width: int) -> dict[str, Any]:
    return {
        "type": "audio_chunk",
        "data": base64.b64encode(data).decode("ascii"),
        "sequence": sequence,
        "duration_ms": expected_duration(len(data) // width, rate),
        "context_id": context_id,
    }


def splits(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:])]


# ---- audio_chunk_frame ------------------------------------------------------------------


def test_frame_text_is_exactly_the_unified_envelope() -> None:
    frame = audio_chunk_frame(b"\x01\x02\x03\x04", 7, "c1", 24000)
    assert frame == (
        b'{"type":"audio_chunk","data":"AQIDBA==","sequence":7,'
        b'"duration_ms":0.083,"context_id":"c1"}'
    )
    assert type(frame) is bytes


@pytest.mark.parametrize(
    ("nbytes", "rate", "width", "text"),
    [
        (4800, 24000, 2, "100"),
        (960, 24000, 2, "20"),
        (1, 22050, 1, "0.045"),
        (902, 22000, 2, "20.5"),
        (2, 16000, 2, "0.062"),  # 0.0625: ties to even
        (6, 16000, 2, "0.188"),  # 0.1875: ties to even
        (0, 24000, 2, "0"),
        (4, 3, 4, "333.333"),
    ],
)
def test_duration_ms_format(nbytes: int, rate: int, width: int, text: str) -> None:
    frame = audio_chunk_frame(bytes(nbytes), 0, "", rate, width)
    assert f'"duration_ms":{text},'.encode() in frame


@FAST
@given(
    data=st.binary(max_size=3000),
    sequence=st.integers(0, 2**64 - 1),
    context_id=context_ids,
    rate=rates,
    width=widths,
)
def test_frame_parses_to_the_expected_dict(
    data: bytes, sequence: int, context_id: str, rate: int, width: int
) -> None:
    data = data[: len(data) // width * width]
    frame = audio_chunk_frame(data, sequence, context_id, rate, width)
    expected = expected_frame(data, sequence, context_id, rate, width)
    assert orjson.loads(frame) == expected
    assert json.loads(frame) == expected
    # Byte for byte what the stdlib writes for the same values, in the same order.
    assert frame == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()


def test_frame_keyword_arguments_and_default_width() -> None:
    frame = audio_chunk_frame(data=b"\x00" * 480, sequence=1, context_id="x", sample_rate=24000)
    assert orjson.loads(frame)["duration_ms"] == 10
    frame = audio_chunk_frame(b"\x00" * 480, 1, "x", 24000, sample_width=4)
    assert orjson.loads(frame)["duration_ms"] == 5


def test_frame_rejects_partial_samples() -> None:
    with pytest.raises(native.PartialSampleError) as info:
        audio_chunk_frame(b"\x00" * 5, 0, "", 24000, 2)
    assert isinstance(info.value, ValueError)
    assert re.findall(r"\d+", str(info.value)) == ["5", "2"]
    with pytest.raises(native.PartialSampleError, match="6 bytes.*4-byte"):
        audio_chunk_frame(b"\x00" * 6, 0, "", 24000, 4)


@pytest.mark.parametrize("width", [0, 3, 8])
def test_frame_rejects_bad_sample_width(width: int) -> None:
    with pytest.raises(native.InvalidArgumentError, match=rf"got {width}\b"):
        audio_chunk_frame(b"", 0, "", 24000, width)


def test_frame_rejects_zero_sample_rate() -> None:
    with pytest.raises(native.InvalidArgumentError, match="sample_rate"):
        audio_chunk_frame(b"", 0, "", 0)


@pytest.mark.parametrize("context_id", ["\ud800", "ok\udfffok", "\udc80"])
def test_lone_surrogate_context_id_is_a_clear_error(context_id: str) -> None:
    with pytest.raises(native.InvalidArgumentError, match="context_id.*lone surrogate") as info:
        audio_chunk_frame(b"", 0, context_id, 24000)
    assert isinstance(info.value.__cause__, UnicodeEncodeError)
    with pytest.raises(native.InvalidArgumentError, match="context_id"):
        AudioChunker(100, context_id=context_id)
    chunker = AudioChunker(100, context_id="kept")
    with pytest.raises(native.InvalidArgumentError, match="context_id"):
        chunker.context_id = context_id
    assert chunker.context_id == "kept"


def test_frame_argument_types() -> None:
    with pytest.raises(TypeError):
        audio_chunk_frame("text", 0, "", 24000)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        audio_chunk_frame(b"", 0, b"ctx", 24000)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        audio_chunk_frame(b"", -1, "", 24000)


# ---- AudioChunker -----------------------------------------------------------------------


@FAST
@given(
    stream=st.binary(max_size=3000),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
    width=widths,
    max_chunk=st.integers(1, 700),
)
def test_any_split_of_any_stream_comes_out_whole(
    stream: bytes, cuts: list[int], width: int, max_chunk: int
) -> None:
    if max_chunk < width:
        with pytest.raises(native.InvalidArgumentError):
            AudioChunker(max_chunk, width)
        return
    chunker = AudioChunker(max_chunk, width)
    limit = max_chunk // width * width
    assert chunker.max_chunk_bytes == limit
    out: list[bytes] = []
    pushed = 0
    for piece in splits(stream, cuts):
        pushed += len(piece)
        for chunk in chunker.push(piece):
            assert type(chunk) is bytes
            assert 0 < len(chunk) <= limit and len(chunk) % width == 0
            out.append(chunk)
        # Low latency: everything but a partial sample is out already.
        assert chunker.pending == pushed % width
        assert sum(map(len, out)) + chunker.pending == pushed
    tail = chunker.flush()
    assert len(tail) == len(stream) % width
    assert chunker.pending == 0
    assert b"".join(out) + tail == stream


@FAST
@given(
    stream=st.binary(max_size=3000),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
    width=widths,
    max_chunk=st.integers(4, 700),
    rate=rates,
    first=st.integers(0, 2**40),
    context_id=context_ids,
)
def test_frames_carry_all_data_with_consecutive_sequences(
    stream: bytes,
    cuts: list[int],
    width: int,
    max_chunk: int,
    rate: int,
    first: int,
    context_id: str,
) -> None:
    chunker = AudioChunker(max_chunk, width, rate, context_id)
    chunker.next_sequence = first
    raw = AudioChunker(max_chunk, width, rate)
    frames: list[bytes] = []
    for piece in splits(stream, cuts):
        new = chunker.push_frames(piece)
        chunks = raw.push(piece)
        assert len(new) == len(chunks)
        for frame, chunk in zip(new, chunks):
            assert orjson.loads(frame) == expected_frame(
                chunk, first + len(frames), context_id, rate, width
            )
            frames.append(frame)
    decoded = b"".join(base64.b64decode(orjson.loads(f)["data"]) for f in frames)
    assert decoded + chunker.flush() == stream
    assert [orjson.loads(f)["sequence"] for f in frames] == list(range(first, first + len(frames)))
    assert chunker.next_sequence == first + len(frames)


def test_emits_whole_samples_at_once_without_filling_a_chunk() -> None:
    chunker = AudioChunker(4800)
    assert chunker.push(b"\x01") == []
    assert chunker.pending == 1
    assert chunker.push(b"\x02\x03") == [b"\x01\x02"]
    assert chunker.pending == 1
    assert chunker.push(b"\x04" + bytes(9597)) == [b"\x03\x04" + bytes(4798), bytes(4798)]
    assert chunker.pending == 1
    assert chunker.flush() == b"\x00"
    assert chunker.flush() == b""
    assert chunker.push(b"") == []


def test_width_four_holds_up_to_three_bytes() -> None:
    chunker = AudioChunker(8, sample_width=4)
    assert chunker.push(b"a") == chunker.push(b"b") == chunker.push(b"c") == []
    assert chunker.pending == 3
    assert chunker.push(b"defghij") == [b"abcdefgh"]
    assert chunker.pending == 2
    assert chunker.push(b"klmnopqrs") == [b"ijklmnop"]
    assert chunker.pending == 3
    assert chunker.push(b"tuvwxyz") == [b"qrstuvwx"]
    assert chunker.flush() == b"yz"
    assert chunker.pending == 0


def test_a_piece_that_is_one_chunk_is_returned_as_is() -> None:
    chunker = AudioChunker(4800)
    piece = bytes(range(200)) * 24
    (chunk,) = chunker.push(piece)
    assert chunk is piece

    class Sub(bytes):
        pass

    (chunk,) = chunker.push(Sub(piece))
    assert type(chunk) is bytes and chunk == piece


def test_push_frames_numbers_from_next_sequence_and_uses_context_id() -> None:
    chunker = AudioChunker(960, context_id="first")
    assert chunker.next_sequence == 0
    assert chunker.context_id == "first"
    frames = chunker.push_frames(bytes(2000))
    assert [orjson.loads(f)["sequence"] for f in frames] == [0, 1, 2]
    assert [orjson.loads(f)["duration_ms"] for f in frames] == [20, 20, 1.667]
    chunker.next_sequence = 100
    chunker.context_id = 'sec"ond'
    (frame,) = chunker.push_frames(bytes(2))
    assert orjson.loads(frame) == expected_frame(bytes(2), 100, 'sec"ond', 24000, 2)
    assert chunker.next_sequence == 101
    assert chunker.push_frames(b"\x00") == []
    assert chunker.next_sequence == 101


def test_properties() -> None:
    chunker = AudioChunker(1001, sample_width=4, sample_rate=8000, context_id="c")
    assert chunker.max_chunk_bytes == 1000
    assert chunker.sample_width == 4
    assert chunker.sample_rate == 8000
    assert chunker.pending == 0
    assert "AudioChunker(" in repr(chunker)
    with pytest.raises(AttributeError):
        chunker.pending = 1  # type: ignore[misc]
    with pytest.raises(OverflowError):
        chunker.next_sequence = -1
    with pytest.raises(TypeError):
        chunker.context_id = 5  # type: ignore[assignment]


def test_constructor_defaults() -> None:
    chunker = AudioChunker(max_chunk_bytes=4800)
    assert (chunker.sample_width, chunker.sample_rate, chunker.context_id) == (2, 24000, "")


@pytest.mark.parametrize(("max_chunk", "width"), [(0, 1), (1, 2), (3, 4), (0, 2)])
def test_chunk_too_small_is_an_invalid_argument(max_chunk: int, width: int) -> None:
    with pytest.raises(native.InvalidArgumentError) as info:
        AudioChunker(max_chunk, width)
    assert isinstance(info.value, ValueError)
    assert re.findall(r"\d+", str(info.value)) == [str(max_chunk), str(width)]


@pytest.mark.parametrize("width", [0, 3, 5, 8])
def test_bad_sample_width_is_an_invalid_argument(width: int) -> None:
    with pytest.raises(native.InvalidArgumentError, match=rf"1, 2 or 4.*got {width}\b"):
        AudioChunker(100, width)


def test_zero_sample_rate_is_an_invalid_argument() -> None:
    with pytest.raises(native.InvalidArgumentError, match="sample_rate"):
        AudioChunker(100, 2, 0)


def test_push_takes_bytes_only() -> None:
    chunker = AudioChunker(100)
    with pytest.raises(TypeError):
        chunker.push("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        chunker.push_frames(bytearray(4))  # type: ignore[arg-type]
    assert chunker.pending == 0
