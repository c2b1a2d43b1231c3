"""A finished transcription in each of OpenAI's response formats, without sockets."""

from __future__ import annotations

import orjson

from slng_fast.openai_compat.requests import TranscriptionRequest
from slng_fast.openai_compat.transcripts import answer_body, segment, subtitles

SEGMENTS = [segment(0, 0.03, 2.328, "please open the door"),
            segment(1, 2.9, 3661.5, "one two three")]
TEXT = "please open the door one two three"


def request(fmt: str) -> TranscriptionRequest:
    return TranscriptionRequest("whisper-1", "pocketsphinx", b"", "a.wav", None, fmt, False)


def test_json_text_and_verbose_json():
    body, kind = answer_body(request("json"), TEXT, 4.2, SEGMENTS)
    assert kind == "application/json"
    assert orjson.loads(body) == {"text": TEXT, "usage": {"type": "duration", "seconds": 5}}
    assert answer_body(request("text"), TEXT, 4.2, SEGMENTS) == (
        TEXT.encode() + b"\n", "text/plain; charset=utf-8")
    verbose = orjson.loads(answer_body(request("verbose_json"), TEXT, 4.2, SEGMENTS)[0])
    assert (verbose["task"], verbose["duration"], verbose["text"]) == ("transcribe", 4.2, TEXT)
    assert [(s["start"], s["end"]) for s in verbose["segments"]] == [(0.03, 2.328), (2.9, 3661.5)]


def test_subtitles_from_the_segments_or_the_whole_audio():
    assert subtitles(SEGMENTS, TEXT, 4.2, vtt=False) == (
        "1\n00:00:00,030 --> 00:00:02,328\nplease open the door\n\n"
        "2\n00:00:02,900 --> 01:01:01,500\none two three\n")
    assert subtitles([], "hello", 2.5, vtt=True) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nhello\n")
    assert subtitles([], "", 2.5, vtt=True) == "WEBVTT\n\n"
    body, kind = answer_body(request("vtt"), TEXT, 4.2, SEGMENTS)
    assert kind == "text/vtt; charset=utf-8" and body.startswith(b"WEBVTT\n\n00:00:00.030 --> ")
