"""The playground page (``GET /``) served by a real gateway with the real built-in engines
(Piper in its own process, PocketSphinx), and driven by headless Chromium through the
DevTools protocol: the TTS panel streams and plays Piper's speech, stops mid-sentence,
and the STT panel transcribes a WAV file that Chromium plays as its fake microphone.
Assertions read the page's own account (``window.playground``), not pixels; a screenshot
after each flow is kept in the test's temporary folder for a failure to be looked at."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from email.message import Message
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import trio

from cdp import Browser
from harness import Running, make_gateway, start_engines, start_gateway, start_gateway_with_piper
from slng_fast.gateway import playground
from slng_fast.wavfile import write_wav
from wsclient import connect, recv, recv_until, send

HANG_GUARD = 60  # seconds; only stops a broken test from hanging, never a threshold
SHORT_TEXT = "Please open the door."
MEDIUM_TEXT = "The weather is nice today. " * 4
LONG_TEXT = " ".join(f"This is sentence number {n} of a long text." for n in range(1, 21))
# Spoken by Piper into the fake microphone; PocketSphinx gets most of these words.
HEARD_TEXT = "Please open the door. The weather is nice today."
EXPECTED_WORDS = {"open", "opened", "door", "weather", "nice", "today"}


@pytest.fixture
async def gw(nursery, tmp_path) -> Running:
    return await start_gateway_with_piper(nursery, tmp_path)


@pytest.fixture
async def plain_gw(nursery, tmp_path) -> Running:
    """eSpeak only: enough to serve the page's files."""
    urls, info = await start_engines(nursery, sphinx=False)
    return await start_gateway(nursery, make_gateway(tmp_path, urls, info))


def http_url(gw: Running) -> str:
    return gw.url.replace("ws://", "http://", 1)


def fetch(url: str, method: str = "GET") -> tuple[int, Message, bytes]:
    """Status, headers (names case-insensitive: h11 writes them in lower case), body."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_the_page_ships_in_the_package():
    """Found through importlib.resources, as from an installed wheel (maturin packs every
    file under python/slng_fast), and every file of the page is served."""
    folder = resources.files("slng_fast.gateway").joinpath("static", "playground")
    assert {name for name, _ in playground.FILES.values()} == {
        f.name for f in folder.iterdir()}
    for name, _ in playground.FILES.values():
        assert playground.read(name), name
    assert b"/playground/app.js" in playground.read("index.html")


async def test_the_page_is_served_without_a_key_under_a_strict_policy(plain_gw):
    base = http_url(plain_gw)
    status, headers, body = await trio.to_thread.run_sync(fetch, base + "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert body == playground.read("index.html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "http" not in csp and "unsafe" not in csp  # no other origin, nothing inline
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path, (name, content_type) in playground.FILES.items():
        status, headers, body = await trio.to_thread.run_sync(fetch, base + path)
        assert (status, headers["Content-Type"], body) == (200, content_type,
                                                           playground.read(name)), path
    status, headers, body = await trio.to_thread.run_sync(fetch, base + "/playground", "HEAD")
    assert status == 200 and body == b""
    status, headers, _ = await trio.to_thread.run_sync(fetch, base + "/", "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, _, body = await trio.to_thread.run_sync(fetch, base + "/playground/nothing.js")
    assert status == 404 and json.loads(body)["error"] == "not_found"


def open_page(browser: Browser, url: str, key: str) -> dict[str, Any]:
    """Load the page, paste the key, load the catalogue; the endpoints and voice chosen."""
    browser.navigate(url + "/")
    browser.evaluate(f"document.getElementById('key').value = {json.dumps(key)};"
                     "document.getElementById('load').click()")
    browser.wait_for("window.playground.catalogue")
    return dict(browser.evaluate("""({
        tts: document.getElementById('tts-endpoint').value,
        voice: document.getElementById('tts-voice').value,
        stt: document.getElementById('stt-endpoint').value})"""))


def tts_state(browser: Browser) -> dict[str, Any]:
    return dict(browser.evaluate("JSON.parse(JSON.stringify(window.playground.tts))"))


def tts_flows(profile: Path, shots: Path, url: str, key: str) -> dict[str, Any]:
    with Browser(profile) as browser:
        # A wrong key: the catalogue says 401, the socket's error event is shown.
        browser.navigate(url + "/")
        browser.evaluate("document.getElementById('key').value = 'slng_wrong';"
                         "document.getElementById('load').click();"
                         "document.getElementById('tts-speak').click()")
        refused = browser.wait_for("window.playground.tts.status.includes('4000') && ["
                                   "window.playground.tts.errors,"
                                   " document.getElementById('catalogue-status').textContent]",
                                   HANG_GUARD)
        chosen = open_page(browser, url, key)
        speak = ("document.getElementById('tts-text').value = %s;"
                 "document.getElementById('tts-speak').click()")
        browser.evaluate(speak % json.dumps(SHORT_TEXT))
        browser.wait_for("window.playground.tts.status === 'done'", HANG_GUARD)
        # Every chunk fed to the player is played out by the audio clock.
        browser.wait_for("window.playground.tts.played === window.playground.tts.fed",
                         HANG_GUARD)
        whole = tts_state(browser)
        browser.screenshot(shots / "tts-done.png")

        # Another endpoint and one of its voices, from the catalogue's lists.
        voices = browser.evaluate("""(() => {
            const endpoint = document.getElementById('tts-endpoint');
            endpoint.value = 'espeak';
            endpoint.dispatchEvent(new Event('change'));
            const voice = document.getElementById('tts-voice');
            voice.value = 'en-us';
            return [...voice.options].map((o) => o.value);
        })()""")
        browser.evaluate(speak % json.dumps(SHORT_TEXT))
        browser.wait_for("window.playground.tts.status === 'done'", HANG_GUARD)
        other = tts_state(browser)
        browser.evaluate("""(() => {
            const endpoint = document.getElementById('tts-endpoint');
            endpoint.value = 'piper';
            endpoint.dispatchEvent(new Event('change'));
        })()""")

        # Everything received, still playing: Stop silences the player.
        browser.evaluate(speak % json.dumps(MEDIUM_TEXT))
        browser.wait_for("window.playground.tts.status === 'playing…'"
                         " && (document.getElementById('tts-stop').click(), true)", HANG_GUARD)
        after_end = tts_state(browser)
        browser.screenshot(shots / "tts-stopped-after-end.png")

        browser.evaluate(speak % json.dumps(LONG_TEXT))
        # Stop while the player has audio queued: checked and clicked in one turn of the
        # page's event loop, so nothing finishes playing in between.
        browser.wait_for("window.playground.tts.playing > 0"
                         " && (document.getElementById('tts-stop').click(), true)", HANG_GUARD)
        browser.wait_for("window.playground.tts.status === 'stopped'", HANG_GUARD)
        stopped = tts_state(browser)
        stopped["buttons"] = browser.evaluate(
            "[document.getElementById('tts-speak').disabled,"
            " document.getElementById('tts-stop').disabled]")
        browser.screenshot(shots / "tts-stopped.png")
        return {"refused": refused, "chosen": chosen, "whole": whole, "voices": voices,
                "other": other, "after_end": after_end, "stopped": stopped, "log": browser.log}


async def test_the_tts_panel_streams_plays_and_stops(gw, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    result = await trio.to_thread.run_sync(tts_flows, tmp_path / "profile", shots,
                                           http_url(gw), gw.keys["pro"])
    context = f"screenshots in {shots}; page log: {result['log']}"
    errors, catalogue_status = result["refused"]
    assert errors == ["auth_failed"] and "401" in catalogue_status, (result["refused"], context)
    assert result["chosen"] == {"tts": "piper", "voice": "en_US-joe-medium",
                                "stt": "pocketsphinx"}, context
    whole = result["whole"]
    assert whole["errors"] == [] and whole["interrupted"] is False, (whole, context)
    assert whole["sampleRate"] == 22050  # Piper's own rate, asked for from the catalogue
    seconds = whole["receivedBytes"] / 2 / whole["sampleRate"]
    assert 0.5 < seconds < 6, (whole, context)  # a short sentence
    assert whole["fed"] == whole["chunks"] > 0 and whole["fedSamples"] * 2 == whole[
        "receivedBytes"], (whole, context)
    assert whole["ttfaMs"] > 0, whole

    assert "en-us" in result["voices"] and len(result["voices"]) > 50  # eSpeak's listing
    other = result["other"]
    assert other["voice"] == "en-us" and other["errors"] == [] and other["chunks"] > 0, (
        other, context)

    after_end = result["after_end"]
    assert after_end["status"] == "stopped" and after_end["interrupted"] is False, (
        after_end, context)  # the utterance had ended; only the player was stopped
    assert after_end["playingAtStop"] > 0 and after_end["playing"] == 0, (after_end, context)

    stopped = result["stopped"]
    assert stopped["interrupted"] is True and stopped["errors"] == [], (stopped, context)
    # Stopped while chunks were still queued in the player, and the player fell silent.
    assert stopped["playingAtStop"] > 0 and stopped["playing"] == 0, (stopped, context)
    # Twenty sentences last far longer than what came before the stop was heard.
    assert 0 < stopped["receivedBytes"] / 2 / stopped["sampleRate"] < 20, (stopped, context)
    assert stopped["buttons"] == [False, True]  # ready to speak again
    assert not [line for line in result["log"] if "Content Security Policy" in line], context


async def piper_speech_16k(gw: Running, nursery: trio.Nursery, text: str) -> bytes:
    """``text`` spoken by the piper endpoint through the gateway, PCM16 at 16 kHz."""
    with trio.fail_after(HANG_GUARD):
        ws = await connect(gw.tts("piper"), gw.keys["pro"], nursery=nursery)
        await send(ws, type="init", sample_rate_hz=16000)
        assert (await recv(ws))["type"] == "ready"
        await send(ws, type="input_text", text=text)
        await send(ws, type="flush")
        events = await recv_until(ws, "audio_end")
        await ws.aclose()
    return b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "audio_chunk")


def stt_flow(profile: Path, shots: Path, url: str, key: str, wav: Path,
             seconds: float) -> dict[str, Any]:
    flags = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={wav}%noloop"]
    with Browser(profile, flags) as browser:
        open_page(browser, url, key)
        browser.evaluate("document.getElementById('stt-record').click()")
        browser.wait_for("window.playground.stt.status.startsWith('listening')", HANG_GUARD)
        # Stop once the whole file has gone out (the microphone is a file, not a clock
        # the test can see otherwise).
        browser.wait_for("window.playground.stt.sentBytes / 2 / window.playground.stt.sampleRate"
                         f" > {seconds}", HANG_GUARD)
        browser.evaluate("document.getElementById('stt-stop').click()")
        browser.wait_for("window.playground.stt.status === 'done'", HANG_GUARD)
        state = dict(browser.evaluate("JSON.parse(JSON.stringify(window.playground.stt))"))
        state["shown"] = browser.evaluate("document.getElementById('stt-final').textContent")
        browser.screenshot(shots / "stt-done.png")
        return {"state": state, "log": browser.log}


async def test_the_stt_panel_transcribes_the_microphone(gw, nursery, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    pad = bytes(2 * 16000)  # one second of silence: the page connects while it plays
    speech = pad + await piper_speech_16k(gw, nursery, HEARD_TEXT) + pad
    wav = tmp_path / "microphone.wav"
    write_wav(wav, speech, 16000)
    result = await trio.to_thread.run_sync(stt_flow, tmp_path / "profile", shots,
                                           http_url(gw), gw.keys["pro"], wav,
                                           len(speech) / 2 / 16000)
    state = result["state"]
    context = f"screenshots in {shots}; page log: {result['log']}"
    assert state["errors"] == [] and state["finalText"], (state, context)
    heard = set(state["finalText"].lower().split())
    assert len(heard & EXPECTED_WORDS) >= 2, (state, context)
    assert state["shown"] == state["finalText"]
    assert state["partials"] > 0, (state, context)  # the text was shown as it came
    assert not [line for line in result["log"] if "Content Security Policy" in line], context
