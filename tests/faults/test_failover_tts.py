"""TTS failover (issue 13) through a real gateway: Orpheus is the SLNG emulator told to
misbehave (`slng_fast.emulators.faults`), Kokoro a healthy one, eSpeak the built-in
engine (22,050 Hz: resampled to the session's 24 kHz). Each switching cause, the storm
that must not switch, the chain exhausted, and the worker's health."""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

import pytest
import trio
import trio_websocket

from faults.upstream import HANG_GUARD
from harness import (
    EMULATOR_KEY,
    free_port,
    make_gateway,
    start_emulator,
    start_engines,
    start_gateway,
)
from slng_fast.config import Config, ConfigError, ProviderConfig
from slng_fast.emulators import slng as slng_emulator
from slng_fast.emulators.faults import FaultPlan
from wsclient import connect, recv, send

TEXT = "The first sentence is here. A second one follows it. And a third ends it."


async def gateway(nursery: Any, tmp_path: Any, orpheus_url: str | None = None,
                  kokoro_faults: dict | None = None, default_chain: tuple[str, ...] = (),
                  **faults: Any) -> Any:
    urls, info = await start_engines(nursery, sphinx=False)
    if orpheus_url is None:
        base = await start_emulator(nursery, "slng", urls, faults=FaultPlan(**faults))
        orpheus_url = f"{base}/orpheus"
    healthy = await start_emulator(nursery, "slng", urls, faults=FaultPlan(**(kokoro_faults or {})))
    config = Config(data_dir=tmp_path, providers={
        "orpheus": ProviderConfig(url=orpheus_url, api_key=EMULATOR_KEY, fallback=default_chain),
        "kokoro": ProviderConfig(url=f"{healthy}/kokoro", api_key=EMULATOR_KEY)},
        provider_timeout_s=2.0, upstream_connect_timeout_s=1.0, first_audio_timeout_s=1.5)
    return await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))


async def session(gw: Any, nursery: Any, fallback: list | None, utterances: int = 1,
                  text: str = TEXT) -> tuple[list[dict], int | None]:
    """init with ``fallback``, ``utterances`` flushes of ``text``; every event up to the
    last audio_end (or the close: its code)."""
    ws = await connect(gw.tts("orpheus"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", **({} if fallback is None else {"fallback": fallback}))
    for _ in range(utterances):
        await send(ws, type="input_text", text=text)
        await send(ws, type="flush")
    seen: list[dict] = []
    code = None
    with trio.fail_after(HANG_GUARD):
        try:
            while sum(e["type"] == "audio_end" for e in seen) < utterances:
                seen.append(await recv(ws))
        except trio_websocket.ConnectionClosed as exc:
            code = exc.reason.code
    await ws.aclose()
    return seen, code


def kinds(events: list[dict]) -> list[str]:
    return [e["type"] for e in events if e["type"] != "audio_chunk"]


def assert_continued(events: list[dict], utterances: int = 1) -> None:
    """One switch, then audio on: sequence without a gap, every utterance ended whole."""
    [switched] = [e for e in events if e["type"] == "provider_switched"]
    assert switched["from"] == "orpheus" and switched["context_id"] == events[0]["context_id"]
    chunks = [e for e in events if e["type"] == "audio_chunk"]
    assert [c["sequence"] for c in chunks] == list(range(len(chunks)))
    ends = [e for e in events if e["type"] == "audio_end"]
    assert [e["id"] for e in ends] == list(range(1, utterances + 1))
    assert all(not e["interrupted"] and e["total_duration_ms"] > 0 for e in ends), ends
    assert not [e for e in events if e["type"] == "error"]


@pytest.mark.parametrize("faults, reason", [
    ({"refuse": True}, "unreachable"),
    ({"handshake_delay_ms": 4000}, "unreachable"),  # over the 1 s connect budget
    ({"close_code": 1011}, "closed"),
    ({"fail_after_ms": 0}, "closed"),  # reset at the first audio, no close frame
    ({"stall_after_bytes": 0}, "first_audio_timeout"),
    ({"stall_after_bytes": 20000}, "stalled"),
    ({"garbage": "oversized"}, "closed"),  # the gateway drops an upstream that sends 5 MiB
], ids=str)
async def test_tts_switches_and_goes_on(nursery, tmp_path, faults, reason):
    gw = await gateway(nursery, tmp_path, **faults)
    events, code = await session(gw, nursery, [{"provider": "kokoro", "voice_id": "af_bella"},
                                               {"provider": "espeak"}], utterances=2)
    assert code is None, events
    assert events[0]["session"]["fallback"] == ["kokoro", "espeak"]
    assert_continued(events, utterances=2)
    [switched] = [e for e in events if e["type"] == "provider_switched"]
    assert (switched["to"], switched["reason"]) == ("kokoro", reason)
    metrics = gw.gateway.metrics
    assert metrics.value("slng_provider_switches_total", **{
        "from": "orpheus", "to": "kokoro", "reason": reason}) == 1
    assert gw.gateway.health.failures == {"orpheus": 1}


def samples(chunks: list[dict]) -> array:
    pcm = array("h", b"".join(base64.b64decode(c["data"]) for c in chunks))
    if sys.byteorder == "big":
        pcm.byteswap()
    return pcm


async def test_tts_mid_utterance_resumes_on_resampled_backup_without_click(nursery, tmp_path):
    """Stalled 0.4 s into the utterance: eSpeak (22,050 Hz) finishes it from a later
    sentence at 24 kHz; the seam ramps to silence and fades in; the ledger splits usage."""
    gw = await gateway(nursery, tmp_path, stall_after_bytes=20000)
    events, code = await session(gw, nursery, [{"provider": "espeak"}])
    assert code is None
    assert_continued(events)
    at = next(i for i, e in enumerate(events) if e["type"] == "provider_switched")
    before = samples([e for e in events[:at] if e["type"] == "audio_chunk"])
    after = samples([e for e in events[at:] if e["type"] == "audio_chunk"])
    assert len(before) and len(after)
    assert before[-1] == 0 and after[0] == 0  # the ramp down, the fade-in
    [end] = [e for e in events if e["type"] == "audio_end"]
    # what the client heard is at most the whole text once: nothing was said twice
    whole = len(before) + len(after)
    assert abs(end["total_duration_ms"] - whole / 24.0) < 5
    with trio.fail_after(10):
        while not (rows := gw.store.usage_rows()) or rows[-1]["ended_at"] is None:
            await trio.sleep(0.05)
    import orjson
    served = orjson.loads(rows[-1]["providers"])
    assert set(served) == {"orpheus", "espeak"} and served["espeak"]["audio_ms"] > 0


async def test_tts_no_text_and_interruptions_never_switch(nursery, tmp_path):
    """The failover storm that must not happen: flushes with nothing to say, stop and
    clear, against a provider that answers nothing at all, then one real utterance on a
    healthy chain."""
    gw = await gateway(nursery, tmp_path, stall_after_bytes=0)
    ws = await connect(gw.tts("orpheus"), gw.keys["enterprise"], nursery=nursery)
    await send(ws, type="init", fallback=["kokoro"])
    assert (await recv(ws))["type"] == "ready"
    seen: list[dict] = []
    with trio.fail_after(HANG_GUARD):
        for _ in range(3):
            await send(ws, type="flush")  # nothing buffered
            await send(ws, type="input_text", text="  ...  ")
            await send(ws, type="flush")  # nothing to say
            await send(ws, type="input_text", text="dropped")
            await send(ws, type="clear")
            await send(ws, type="input_text", text="Interrupted before its audio.")
            await send(ws, type="stop")
        while sum(e["type"] == "audio_end" for e in seen) < 6:  # 2 a round
            seen.append(await recv(ws))
        # a flush of only punctuation the provider never answers: it ends, no switch
        await send(ws, type="input_text", text=" ... ")
        await send(ws, type="flush")
        seen.append(await recv(ws))
        assert seen[-1]["type"] == "audio_end" and not seen[-1]["interrupted"]
        await send(ws, type="ping")
        seen.append(await recv(ws))
    assert "provider_switched" not in kinds(seen) and "error" not in kinds(seen), seen
    assert seen[-1]["type"] == "pong"
    await ws.aclose()
    assert gw.gateway.health.failures == {}


async def test_tts_chain_exhausted_is_provider_unavailable(nursery, tmp_path):
    gw = await gateway(nursery, tmp_path, refuse=True, kokoro_faults={"refuse": True})
    events, code = await session(gw, nursery, ["kokoro"])
    assert code == 1013
    assert kinds(events)[-3:] == ["provider_switched", "error", "session_ended"]
    assert events[-2]["code"] == "provider_unavailable"


async def test_tts_bad_chain_is_invalid_parameter(nursery, tmp_path):
    gw = await gateway(nursery, tmp_path)
    ws = await connect(gw.tts("orpheus"), gw.keys["pro"], nursery=nursery)
    for chain in (["nope"], ["pocketsphinx"], [{"provider": "kokoro", "voice_id": "tara"}],
                  [{"provider": "kokoro", "top_p": 7}], ["orpheus"], "kokoro"):
        await send(ws, type="init", fallback=chain)
        event = await recv(ws)
        assert event["type"] == "error" and event["code"] in (
            "invalid_parameter", "invalid_message"), (chain, event)
    await send(ws, type="init", fallback=["kokoro"])
    assert (await recv(ws))["session"]["fallback"] == ["kokoro"]
    await ws.aclose()


async def test_tts_down_provider_is_skipped_then_used_again(nursery, tmp_path):
    """Orpheus not listening: the first session switches, the next skips it at once
    (``provider_down``); once it listens, a probe finds it and sessions use it again."""
    port = free_port()
    gw = await gateway(nursery, tmp_path, orpheus_url=f"ws://127.0.0.1:{port}/orpheus")
    events, _ = await session(gw, nursery, ["kokoro"])
    assert [e["reason"] for e in events if e["type"] == "provider_switched"] == ["unreachable"]
    events, _ = await session(gw, nursery, ["kokoro"])
    assert [e["reason"] for e in events if e["type"] == "provider_switched"] == ["provider_down"]
    assert kinds(events)[:2] == ["ready", "provider_switched"]
    urls = gw.gateway.registry.engine_urls
    await nursery.start(lambda task_status: slng_emulator.serve_emulator(
        "127.0.0.1", port, engine_url=urls["espeak"], api_key=EMULATOR_KEY,
        task_status=task_status))
    with trio.fail_after(HANG_GUARD):
        while gw.gateway.health.health.down():
            await trio.sleep(0.1)
    events, code = await session(gw, nursery, ["kokoro"])
    assert code is None and "provider_switched" not in kinds(events)


async def test_tts_config_default_chain_applies_and_init_overrides_it(nursery, tmp_path):
    """``[providers.orpheus] fallback = ["espeak"]``: a session that names no chain has
    it; one that names its own has that one instead. Limits are the session's: the
    resent text is not counted as the client's messages or characters."""
    gw = await gateway(nursery, tmp_path, refuse=True, default_chain=("espeak",))
    events, code = await session(gw, nursery, None)
    assert code is None and events[0]["session"]["fallback"] == ["espeak"]
    assert_continued(events)
    ended_usage = None
    events, code = await session(gw, nursery, ["kokoro"])
    assert events[0]["session"]["fallback"] == ["kokoro"]
    assert [e["to"] for e in events if e["type"] == "provider_switched"] == ["kokoro"]
    with trio.fail_after(10):
        while len(rows := gw.store.usage_rows()) < 2 or rows[-1]["ended_at"] is None:
            await trio.sleep(0.05)
    ended_usage = rows[-1]
    assert ended_usage["characters"] == len(TEXT) and ended_usage["messages"] == 3


@pytest.mark.parametrize("bad", [{"fallback": ("nope",)}, {"fallback": ("pocketsphinx",)},
                                 {"options": {"warm": 99}}], ids=str)
def test_config_chains_and_pools_are_checked_at_start(tmp_path, bad):
    config = Config(data_dir=tmp_path, providers={"orpheus": ProviderConfig(**bad)})
    with pytest.raises(ConfigError):
        make_gateway(tmp_path, {}, {}, config=config)
