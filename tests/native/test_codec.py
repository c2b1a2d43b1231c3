"""Sample-format conversions of the native core (rust/src/codec.rs).

G.711 is checked bit for bit against CPython's ``audioop`` for every PCM16 value
and every code; PCM16 <-> f32 against a numpy model of the documented rule.
"""

from __future__ import annotations

import re
import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # removed in Python 3.13; the reference for G.711 here

ALL_PCM16 = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))

FAST = settings(max_examples=200, deadline=None)

pcm16_bytes = st.binary(max_size=2048).map(lambda b: b[: len(b) // 2 * 2])
any_bytes = st.binary(max_size=1024)


# ---- exhaustive comparison with audioop -----------------------------------------


def test_pcm16_to_mulaw_matches_audioop_for_every_sample() -> None:
    assert native.pcm16_to_mulaw(ALL_PCM16) == audioop.lin2ulaw(ALL_PCM16, 2)


def test_pcm16_to_alaw_matches_audioop_for_every_sample() -> None:
    assert native.pcm16_to_alaw(ALL_PCM16) == audioop.lin2alaw(ALL_PCM16, 2)


def test_mulaw_to_pcm16_matches_audioop_for_every_code() -> None:
    assert native.mulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_to_pcm16_matches_audioop_for_every_code() -> None:
    assert native.alaw_to_pcm16(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


@FAST
@given(pcm16_bytes)
def test_g711_encoders_match_audioop_on_arbitrary_buffers(pcm: bytes) -> None:
    assert native.pcm16_to_mulaw(pcm) == audioop.lin2ulaw(pcm, 2)
    assert native.pcm16_to_alaw(pcm) == audioop.lin2alaw(pcm, 2)


@FAST
@given(any_bytes)
def test_g711_decoders_match_audioop_on_arbitrary_buffers(codes: bytes) -> None:
    assert native.mulaw_to_pcm16(codes) == audioop.ulaw2lin(codes, 2)
    assert native.alaw_to_pcm16(codes) == audioop.alaw2lin(codes, 2)


# ---- G.711 round trips --------------------------------------------------------------


def test_every_code_reencodes_to_its_canonical_code() -> None:
    # Mu-law 0x7F is "negative zero": it decodes to 0, whose code is 0xFF.
    canonical_mu = bytes(0xFF if c == 0x7F else c for c in ALL_CODES)
    assert native.pcm16_to_mulaw(native.mulaw_to_pcm16(ALL_CODES)) == canonical_mu
    assert native.pcm16_to_alaw(native.alaw_to_pcm16(ALL_CODES)) == ALL_CODES


@FAST
@given(any_bytes)
def test_mulaw_decode_encode_decode_is_stable(codes: bytes) -> None:
    once = native.mulaw_to_pcm16(codes)
    assert native.mulaw_to_pcm16(native.pcm16_to_mulaw(once)) == once


@FAST
@given(any_bytes)
def test_alaw_decode_encode_decode_is_stable(codes: bytes) -> None:
    once = native.alaw_to_pcm16(codes)
    assert native.pcm16_to_alaw(once) == codes
    assert native.alaw_to_pcm16(native.pcm16_to_alaw(once)) == once


@FAST
@given(pcm16_bytes)
def test_g711_encode_decode_encode_is_stable(pcm: bytes) -> None:
    mu = native.pcm16_to_mulaw(pcm)
    assert native.pcm16_to_mulaw(native.mulaw_to_pcm16(mu)) == mu.replace(b"\x7f", b"\xff")
    a = native.pcm16_to_alaw(pcm)
    assert native.pcm16_to_alaw(native.alaw_to_pcm16(a)) == a


# ---- PCM16 <-> f32 ------------------------------------------------------------------


def reference_f32_to_pcm16(data: bytes) -> bytes:
    """The documented rule: clip to [-1, 1], * 32768, round half to even, saturate, NaN -> 0."""
    x = np.frombuffer(data, dtype="<f4").astype(np.float64)
    x = np.where(np.isnan(x), 0.0, np.clip(x, -1.0, 1.0))
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


def test_pcm16_to_f32_uses_scale_32768() -> None:
    f = np.frombuffer(native.pcm16_to_f32(ALL_PCM16), dtype="<f4")
    expected = np.arange(-32768, 32768, dtype=np.float32) / np.float32(32768)
    assert np.array_equal(f, expected)
    assert f[0] == -1.0 and f[32768] == 0.0 and f[-1] == np.float32(32767 / 32768)


def test_pcm16_f32_pcm16_is_identity_for_every_sample() -> None:
    assert native.f32_to_pcm16(native.pcm16_to_f32(ALL_PCM16)) == ALL_PCM16


@FAST
@given(pcm16_bytes)
def test_pcm16_f32_pcm16_is_identity(pcm: bytes) -> None:
    f = native.pcm16_to_f32(pcm)
    assert len(f) == 2 * len(pcm)
    assert native.f32_to_pcm16(f) == pcm


@FAST
@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=300))
def test_f32_to_pcm16_follows_the_documented_rule(values: list[float]) -> None:
    data = np.array(values, dtype="<f4").tobytes()
    assert native.f32_to_pcm16(data) == reference_f32_to_pcm16(data)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, 32767),
        (-1.0, -32768),
        (3.5, 32767),
        (-3.5, -32768),
        (float("inf"), 32767),
        (float("-inf"), -32768),
        (float("nan"), 0),
        (0.5 / 32768, 0),  # ties go to even
        (1.5 / 32768, 2),
        (-2.5 / 32768, -2),
        (0.6 / 32768, 1),
    ],
)
def test_f32_to_pcm16_edge_values(value: float, expected: int) -> None:
    assert native.f32_to_pcm16(struct.pack("<f", value)) == struct.pack("<h", expected)


# ---- sizes and errors -----------------------------------------------------------------


def test_empty_input_gives_empty_output() -> None:
    for fn in (
        native.pcm16_to_mulaw,
        native.mulaw_to_pcm16,
        native.pcm16_to_alaw,
        native.alaw_to_pcm16,
        native.pcm16_to_f32,
        native.f32_to_pcm16,
    ):
        assert fn(b"") == b""


@pytest.mark.parametrize("fn", [native.pcm16_to_mulaw, native.pcm16_to_alaw, native.pcm16_to_f32])
@pytest.mark.parametrize("length", [1, 3, 4801])
def test_odd_pcm16_input_raises_partial_sample_error(fn: object, length: int) -> None:
    assert callable(fn)
    with pytest.raises(native.PartialSampleError) as info:
        fn(bytes(length))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, native.NativeError)
    numbers = re.findall(r"\d+", str(info.value))
    assert str(length) in numbers and "2" in numbers


@pytest.mark.parametrize("length", [1, 2, 3, 5, 6, 7])
def test_f32_input_must_be_whole_floats(length: int) -> None:
    with pytest.raises(native.PartialSampleError, match=rf"\b{length} bytes\b.*\b4-byte"):
        native.f32_to_pcm16(bytes(length))


def test_partial_sample_error_is_a_value_error() -> None:
    assert issubclass(native.PartialSampleError, ValueError)
    with pytest.raises(ValueError):
        native.pcm16_to_mulaw(b"\x00")


@pytest.mark.parametrize("bad", ["text", bytearray(b"\x00\x00"), memoryview(b"\x00\x00"), None, 3])
def test_non_bytes_input_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        native.pcm16_to_mulaw(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.alaw_to_pcm16(bad)  # type: ignore[arg-type]


def test_outputs_are_new_bytes_of_the_right_length() -> None:
    pcm = bytes(range(256)) * 10
    assert len(native.pcm16_to_mulaw(pcm)) == len(pcm) // 2
    assert len(native.pcm16_to_alaw(pcm)) == len(pcm) // 2
    assert len(native.mulaw_to_pcm16(pcm)) == len(pcm) * 2
    assert len(native.alaw_to_pcm16(pcm)) == len(pcm) * 2
    assert len(native.pcm16_to_f32(pcm)) == len(pcm) * 2
    assert len(native.f32_to_pcm16(pcm)) == len(pcm) // 2
    assert type(native.pcm16_to_mulaw(pcm)) is bytes
