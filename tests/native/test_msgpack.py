"""MessagePack in the native core (rust/src/msgpack.rs): the Kyutai frames, the
general encoder and the strict decoder, checked against the ``msgpack`` package
(the reference implementation) where it is installed."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native

try:
    import msgpack
except ImportError:  # pragma: no cover - the test extra installs it
    msgpack = None

needs_msgpack = pytest.mark.skipif(msgpack is None, reason="the msgpack package is not installed")
FAST = settings(max_examples=200, deadline=None)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def f32le(values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


# ---- Kyutai frames ------------------------------------------------------------------

def test_audio_frame_layout():
    frame = native.kyutai_audio_frame(f32le([0.5, -1.0, 0.0]))
    expected = (b"\x82\xa4type\xa5Audio\xa3pcm\x93"
                + b"".join(b"\xca" + struct.pack(">f", v) for v in (0.5, -1.0, 0.0)))
    assert frame == expected
    assert native.msgpack_decode(frame) == {"type": "Audio", "pcm": [0.5, -1.0, 0.0]}


def test_audio_frame_of_one_model_step():
    assert native.KYUTAI_FRAME_SAMPLES == 1920
    pcm = np.linspace(-1, 1, 1920, dtype="<f4")
    frame = native.kyutai_audio_frame(pcm.tobytes())
    assert len(frame) == 19 + 5 * 1920  # header with an array16, then 0xca + 4 bytes each
    decoded = native.msgpack_decode(frame)
    assert list(decoded) == ["type", "pcm"]
    assert np.array_equal(np.asarray(decoded["pcm"], dtype="<f4"), pcm)


def test_audio_frame_needs_whole_samples():
    with pytest.raises(native.PartialSampleError):
        native.kyutai_audio_frame(b"\x00" * 5)
    assert native.msgpack_decode(native.kyutai_audio_frame(b"")) == {"type": "Audio", "pcm": []}


@pytest.mark.parametrize("marker", [0, 1, 127, 128, 70000, -1, -200, 2**63 - 1, -(2**63)])
def test_marker_frame(marker):
    frame = native.kyutai_marker_frame(marker)
    assert native.msgpack_decode(frame) == {"type": "Marker", "id": marker}
    if msgpack is not None:
        assert frame == msgpack.packb({"type": "Marker", "id": marker})


@needs_msgpack
@FAST
@given(st.lists(st.floats(width=32, allow_nan=False), max_size=3000))
def test_audio_frame_matches_the_reference_client(samples):
    """What moshi-server's own clients send: ``packb(..., use_single_float=True)``."""
    frame = native.kyutai_audio_frame(f32le(samples))
    assert frame == msgpack.packb({"type": "Audio", "pcm": samples}, use_bin_type=True,
                                  use_single_float=True)


@needs_msgpack
def test_audio_frame_keeps_nan_and_infinities():
    frame = native.kyutai_audio_frame(f32le([math.inf, -math.inf, math.nan]))
    pcm = unpack(frame)["pcm"]
    assert pcm[0] == math.inf and pcm[1] == -math.inf and math.isnan(pcm[2])


# ---- general encoder and decoder ------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=300) | st.binary(max_size=300))
keys = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) \
    | st.binary(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(keys, inner, max_size=8),
    max_leaves=40,
)


@FAST
@given(values)
def test_round_trip(value):
    assert native.msgpack_decode(native.msgpack_encode(value)) == value


@needs_msgpack
@FAST
@given(values)
def test_encoder_matches_the_reference(value):
    assert native.msgpack_encode(value) == msgpack.packb(value, use_bin_type=True)


@needs_msgpack
@FAST
@given(values)
def test_decoder_reads_what_the_reference_writes(value):
    packed = msgpack.packb(value, use_bin_type=True)
    assert native.msgpack_decode(packed) == unpack(packed)
    try:
        single = msgpack.packb(value, use_bin_type=True, use_single_float=True)
    except OverflowError:  # the reference refuses floats beyond float32's range
        return
    assert native.msgpack_decode(single) == unpack(single)


@needs_msgpack
@FAST
@given(st.lists(st.floats(width=32), max_size=50))
def test_single_float_encoding_matches_the_reference(samples):
    packed = native.msgpack_encode(samples, single_float=True)
    assert packed == msgpack.packb(samples, use_single_float=True)


def test_tuples_encode_as_arrays_and_bytearray_as_bin():
    assert native.msgpack_decode(native.msgpack_encode((1, (2,)))) == [1, [2]]
    assert native.msgpack_decode(native.msgpack_encode(bytearray(b"ab"))) == b"ab"


def test_duplicate_keys_last_wins():
    assert native.msgpack_decode(b"\x82\xa1a\x01\xa1a\x02") == {"a": 2}


def test_the_moshi_server_messages():
    """As moshi-server writes them (rmp_serde, structs as maps)."""
    step = {"type": "Step", "step_idx": 12, "prs": [0.25, 0.5], "buffered_pcm": 0}
    word = {"type": "Word", "text": "hello", "start_time": 1.28}
    for message in (step, word, {"type": "EndWord", "stop_time": 1.6}, {"type": "Ready"},
                    {"type": "Marker", "id": 3}, {"type": "Error", "message": "no"}):
        assert native.msgpack_decode(native.msgpack_encode(message)) == message


# ---- refusals ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"\xc1", "reserved"),
    (b"\xc0\xc0", "after the MessagePack value"),
    (b"\xa3ab", "ends inside"),
    (b"\xcb\x00\x00", "ends inside"),
    (b"\x92\x01", "ends inside"),
    (b"\xa2\xff\xfe", "UTF-8"),
    (b"\x81\x90\xc0", "keys must be scalars"),
    (b"\x81\x80\xc0", "keys must be scalars"),
    (b"\xd6\xff\x00\x00\x00\x00", "extension type -1"),  # a timestamp
    (b"\xc7\x01\x05\x00", "extension type 5"),
    (b"\xdd\xff\xff\xff\xff", "ends inside"),  # 2**32 - 1 items announced in 5 bytes
    (b"\xdf\xff\xff\xff\xff\xc0", "ends inside"),
    (b"\x91" * 65 + b"\xc0", "deeper than 64"),
])
def test_malformed_input_raises_msgpack_error(data, words):
    with pytest.raises(native.MsgpackError, match=words):
        native.msgpack_decode(data)


def test_msgpack_error_is_a_value_error():
    assert issubclass(native.MsgpackError, native.NativeError)
    assert issubclass(native.MsgpackError, ValueError)


def test_nesting_up_to_64_is_fine():
    assert native.msgpack_decode(b"\x91" * 64 + b"\xc0") is not None


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_value_error(data):
    try:
        value = native.msgpack_decode(data)
    except native.MsgpackError:
        return  # refused: never another exception, never a crash
    if msgpack is not None:
        assert value == unpack(data)


@needs_msgpack
@FAST
@given(values)
def test_every_truncation_of_valid_data_is_refused(value):
    packed = msgpack.packb(value, use_bin_type=True)
    for end in range(len(packed)):
        with pytest.raises(native.MsgpackError):
            native.msgpack_decode(packed[:end])


@pytest.mark.parametrize("value, error", [
    (2**64, native.MsgpackError),
    (-(2**63) - 1, native.MsgpackError),
    ("\ud800", native.MsgpackError),
    (object(), TypeError),
    ({1, 2}, TypeError),
])
def test_unencodable_values(value, error):
    with pytest.raises(error):
        native.msgpack_encode(value)


def test_too_deep_to_encode():
    value: list = []
    for _ in range(70):
        value = [value]
    with pytest.raises(native.MsgpackError, match="deeper than 64"):
        native.msgpack_encode(value)
