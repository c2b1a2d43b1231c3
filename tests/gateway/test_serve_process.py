"""`slng-fast serve` as a user runs it: a real process with its engine processes, the
client commands and keys. Graceful shutdown and the ledger after a crash are cases of
tests/faults/test_process_faults.py."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import orjson
import trio
import trio_websocket

from engines.engine_audio import (
    ROUND_TRIP_SENTENCES,
    ROUND_TRIP_VOICE,
    SYNTHESIS_ROUND_TRIP_MIN_HITS,
    recognised,
)
from harness import Served, engine_pids, run_cli
from slng_fast.wavfile import read_wav, write_wav
from wsclient import closed_code, recv, send


def test_first_start_prints_url_and_dev_key_once(served, tmp_path):
    key = (tmp_path / "dev-key").read_text().strip()
    assert key in served.lines  # printed once, on a line of its own
    assert served.stop() == 0
    again = Served(tmp_path)
    try:
        assert key not in again.lines
    finally:
        assert again.stop() == 0


def test_gateway_process_does_not_load_espeak_or_piper(served, tmp_path):
    def mapped_gpl(pid: int) -> set[str]:
        # Library files only: the checkout's own path may well contain "piper".
        files = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                 if "/" in line}
        return {f for f in files if "espeak" in f.rsplit("/", 1)[-1] or "onnxruntime" in f
                or "/site-packages/piper/" in f}

    # Not even to list eSpeak's voices: the catalogue reads what the engine process sent.
    key = (tmp_path / "dev-key").read_text().strip()
    request = urllib.request.Request(served.url.replace("ws://", "http://") + "/v1/voices",
                                     headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        entries = {e["provider"]: e for e in orjson.loads(answer.read())["endpoints"]}
    assert {"en-us", "fr", "de"} <= {v["id"] for v in entries["espeak"]["voices"]}
    assert entries["espeak"]["available"] and entries["pocketsphinx"]["available"]
    assert mapped_gpl(served.proc.pid) == set()
    # ...while the engine processes it started do map them.
    pids = engine_pids(served.proc.pid)
    assert any("onnxruntime" in f for f in mapped_gpl(pids["piper"]))
    assert any("espeak" in f for f in mapped_gpl(pids["espeak"]))


def test_say_and_transcribe_round_trip(served, tmp_path):
    # PocketSphinx hears eSpeak's voice reliably only sentence by sentence with silence
    # around each (as in the engine tests), so the sentences are said one by one.
    speech, rate, codec = b"", 16000, "pcm16"
    for n, sentence in enumerate(ROUND_TRIP_SENTENCES):
        wav = tmp_path / f"said-{n}.wav"
        said = run_cli("say", sentence, "--provider", "espeak", "--voice", ROUND_TRIP_VOICE,
                       "--url", served.url,
                       "-o", str(wav), "--sample-rate", "16000", data_dir=tmp_path)
        assert "time to first audio" in said.stdout and wav.stat().st_size > 10_000
        audio, rate, codec = read_wav(wav)
        speech += bytes(rate) + audio + bytes(rate)
    padded = tmp_path / "speech.wav"
    write_wav(padded, speech, rate, codec)
    heard = run_cli("transcribe", str(padded), "--url", served.url, data_dir=tmp_path)
    assert heard.stdout.count("partial:") >= 1, heard.stdout
    final = [line for line in heard.stdout.splitlines() if line.startswith("final:")][0]
    assert len(recognised(final)) >= SYNTHESIS_ROUND_TRIP_MIN_HITS, heard.stdout


def test_say_speaks_with_piper_by_default_and_is_understood(served, tmp_path):
    """`say` with no provider uses the built-in Piper voice; `transcribe` hears most of
    the words of three sentences (PocketSphinx, half of them at least)."""
    sentences = ("Please open the door.", "The weather is nice today.",
                 "I would like a cup of coffee.")
    speech, rate, codec = b"", 16000, "pcm16"
    for n, sentence in enumerate(sentences):
        wav = tmp_path / f"piper-{n}.wav"
        said = run_cli("say", sentence, "--url", served.url, "-o", str(wav),
                       "--sample-rate", "16000", data_dir=tmp_path)
        assert "time to first audio" in said.stdout
        audio, rate, codec = read_wav(wav)
        speech += bytes(rate) + audio + bytes(rate)
    padded = tmp_path / "piper-speech.wav"
    write_wav(padded, speech, rate, codec)
    heard = run_cli("transcribe", str(padded), "--url", served.url, data_dir=tmp_path)
    final = [line for line in heard.stdout.splitlines() if line.startswith("final:")][0]
    heard_words = set(final.lower().removeprefix("final:").split())
    said_words = [w.strip(".").lower() for s in sentences for w in s.split()]
    hits = sum(1 for w in said_words if w in heard_words)
    assert hits >= len(said_words) / 2, heard.stdout


def test_keys_create_list_revoke_seen_by_running_gateway(served, tmp_path):
    created = run_cli("keys", "create", "--tier", "free", "--name", "ci", data_dir=tmp_path)
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("slng_") and " " not in secret
    listing = run_cli("keys", "list", data_dir=tmp_path).stdout
    key_id = [line.split()[0] for line in listing.splitlines() if line.endswith("ci")][0]

    async def ping() -> int | None:
        async with trio_websocket.open_websocket_url(
                f"{served.url}/v1/tts/espeak-websocket-stream",
                extra_headers=[(b"authorization", f"Bearer {secret}".encode())]) as ws:
            try:
                await send(ws, type="ping")
            except trio_websocket.ConnectionClosed as exc:  # refused before we sent it
                return exc.reason.code
            event = await recv(ws)
            if event["type"] == "pong":
                return None
            return await closed_code(ws)

    assert trio.run(ping) is None
    run_cli("keys", "revoke", key_id, data_dir=tmp_path)
    started = time.monotonic()
    assert trio.run(ping) == 4000
    assert time.monotonic() - started < 1.0
    assert "revoked" in run_cli("keys", "list", data_dir=tmp_path).stdout




def test_engines_stop_with_the_gateway(served):
    pids = engine_pids(served.proc.pid)
    served.proc.kill()  # even kill -9: the engines notice their parent is gone
    served.proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids.values()):
        time.sleep(0.1)
    alive = [p for p in pids.values() if Path(f"/proc/{p}").exists()
             and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
    assert alive == []


def test_a_reconnect_right_after_a_clean_close_is_accepted(served, tmp_path):
    """Free key, one connection: close cleanly (the close handshake done on the client's
    side), reconnect at once: accepted, whether the upstream was still opening or open."""
    created = run_cli("keys", "create", "--tier", "free", data_dir=tmp_path)
    key = created.stdout.strip().splitlines()[-1]
    headers = [(b"authorization", f"Bearer {key}".encode())]
    url = f"{served.url}/v1/tts/espeak-websocket-stream"

    async def session(nursery: trio.Nursery, hold: float) -> dict:
        ws = await trio_websocket.connect_websocket_url(nursery, url, None,
                                                        extra_headers=headers)
        await send(ws, type="init")
        event = await recv(ws)
        await trio.sleep(hold)
        await ws.aclose()
        return event

    async def main() -> list[str]:
        seen = []
        async with trio.open_nursery() as nursery:
            for hold in (0.0, 0.0, 0.3, 1.0, 0.0):
                seen.append((await session(nursery, hold))["type"])
                seen.append((await session(nursery, 0.0))["type"])
        return seen

    assert trio.run(main) == ["ready"] * 10
