"""Minimal WAV reading and writing for the client commands: PCM16, mu-law and A-law."""

from __future__ import annotations

import struct
from pathlib import Path

FORMAT_TAGS = {"pcm16": 1, "alaw": 6, "mulaw": 7}
TAG_CODECS = {v: k for k, v in FORMAT_TAGS.items()}


def write_wav(path: str | Path, data: bytes, sample_rate: int, codec: str = "pcm16") -> None:
    tag = FORMAT_TAGS[codec]
    width = 2 if codec == "pcm16" else 1
    fmt = struct.pack("<HHIIHH", tag, 1, sample_rate, sample_rate * width, width, width * 8)
    if tag != 1:
        fmt += struct.pack("<H", 0)  # cbSize for non-PCM formats
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if tag != 1:
        body += b"fact" + struct.pack("<II", 4, len(data) // width)
    body += b"data" + struct.pack("<I", len(data)) + data
    if len(data) % 2:
        body += b"\0"
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def read_wav(path: str | Path) -> tuple[bytes, int, str]:
    """(audio, sample rate, codec) of a mono WAV file."""
    raw = Path(path).read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a WAV file")
    pos = 12
    fmt: tuple[int, ...] | None = None
    while pos + 8 <= len(raw):
        chunk, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        payload = raw[pos + 8:pos + 8 + size]
        if chunk == b"fmt ":
            fmt = struct.unpack("<HHIIHH", payload[:16])
        elif chunk == b"data":
            if fmt is None:
                raise ValueError(f"{path}: data before fmt")
            tag, channels, rate, _, _, bits = fmt
            codec = TAG_CODECS.get(tag)
            if codec is None or (codec == "pcm16" and bits != 16):
                raise ValueError(f"{path}: only 16-bit PCM, mu-law and A-law WAV are supported")
            if channels != 1:
                raise ValueError(f"{path}: only mono audio is supported, got {channels} channels")
            return payload, rate, codec
        pos += 8 + size + (size % 2)
    raise ValueError(f"{path}: no data chunk")
