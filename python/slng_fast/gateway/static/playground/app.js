// slng-fast playground: a TTS panel that plays audio as it streams in, and an STT panel
// that streams the microphone and shows the transcript live. The unified protocol over
// the gateway's WebSockets, the key as the subprotocol `bearer.<key>` (never in a URL).
"use strict";

const STORAGE_KEY = "slng-fast.playground.key";
const TTS_RATES = [8000, 16000, 22050, 24000, 44100, 48000];

// What the page did, for the curious and for the browser tests (no pixels needed).
const state = {
  catalogue: null,
  tts: { status: "idle", receivedBytes: 0, chunks: 0, fed: 0, fedSamples: 0, played: 0,
         ttfaMs: null, sampleRate: null, voice: null, interrupted: null, playing: 0,
         playingAtStop: null, errors: [] },
  stt: { status: "idle", sampleRate: null, sentBytes: 0, sentFrames: 0, partials: 0,
         stable: "", partial: "", finalText: null, errors: [] },
};
window.playground = state;

const $ = (id) => document.getElementById(id);

function keyValue() { return $("key").value.trim(); }

function wsUrl(path) {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
}

function show(id, text, bad) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("bad", Boolean(bad));
}

function formatBytes(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB`
    : `${(n / 1048576).toFixed(2)} MiB`;
}

function closeReason(event) {
  return `closed ${event.code}${event.reason ? ": " + event.reason : ""}`;
}

// ---- key and catalogue ----------------------------------------------------------------

function rememberKey() {
  if ($("remember").checked && keyValue()) localStorage.setItem(STORAGE_KEY, keyValue());
  else localStorage.removeItem(STORAGE_KEY);
}

function option(value, label, selected) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  o.selected = Boolean(selected);
  return o;
}

function endpoints(kind) {
  return (state.catalogue ? state.catalogue.endpoints : []).filter((e) => e.kind === kind);
}

function fillEndpoints(select, kind, preferred) {
  const current = select.value || preferred;
  const list = endpoints(kind);
  if (!list.length) return;
  const chosen = list.some((e) => e.provider === current) ? current
    : (list.find((e) => e.available) || list[0]).provider;
  select.replaceChildren(...list.map((e) => option(
    e.provider, e.available ? e.provider : `${e.provider} (not configured)`,
    e.provider === chosen)));
}

function fillVoices() {
  const select = $("tts-voice");
  const entry = endpoints("tts").find((e) => e.provider === $("tts-endpoint").value);
  const voices = entry && entry.voices ? entry.voices : [];
  const fallback = entry ? entry.default_voice : null;
  const items = [option("", fallback ? `(default: ${fallback})` : "(default)", !fallback)];
  for (const v of voices) {
    const langs = v.languages && v.languages.length ? ` — ${v.languages.join(", ")}` : "";
    const label = (v.name && v.name !== v.id ? `${v.name} (${v.id})` : v.id) + langs;
    items.push(option(v.id, label, v.id === fallback));
  }
  select.replaceChildren(...items);
}

let catalogueFor = null;  // the key of the request in flight (Enter fires change and submit)

async function loadCatalogue() {
  const key = keyValue();
  if (!key) { show("catalogue-status", "paste a key to load the voices", true); return; }
  if (catalogueFor === key) return;
  catalogueFor = key;
  try { await fetchCatalogue(key); } finally { catalogueFor = null; }
}

async function fetchCatalogue(key) {
  rememberKey();
  show("catalogue-status", "loading voices…");
  try {
    const response = await fetch("/v1/voices", {
      headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
    const body = await response.json();
    if (!response.ok) {
      show("catalogue-status", `GET /v1/voices: ${response.status} ${body.error || ""} ${body.message || ""}`, true);
      return;
    }
    state.catalogue = body;
    fillEndpoints($("tts-endpoint"), "tts", "piper");
    fillEndpoints($("stt-endpoint"), "stt", "pocketsphinx");
    fillVoices();
    show("catalogue-status",
      `${endpoints("tts").length} TTS and ${endpoints("stt").length} STT endpoints`);
  } catch (err) {
    show("catalogue-status", `GET /v1/voices failed: ${err}`, true);
  }
}

// ---- text to speech -------------------------------------------------------------------

const tts = { ws: null, ctx: null, sources: new Set(), playhead: 0, stopping: false,
  starting: false, sentAt: 0 };

function ttsRate(entry) {
  const rate = entry && entry.sample_rate_hz;
  return TTS_RATES.includes(rate) ? rate : 24000;  // the endpoint's own rate: no resampling
}

function ttsFigures() {
  const s = state.tts;
  show("tts-ttfa", s.ttfaMs === null ? "–" : `${Math.round(s.ttfaMs)} ms`);
  show("tts-received", `${formatBytes(s.receivedBytes)} in ${s.chunks} chunks`);
  show("tts-duration", s.sampleRate ? `${(s.fedSamples / s.sampleRate).toFixed(2)} s` : "–");
}

// Stop stays usable while queued audio plays on after the socket is done (a voice that
// speaks faster than real time sends everything long before it has been heard).
function ttsButtons() {
  $("tts-speak").disabled = tts.ws !== null || tts.starting;
  $("tts-stop").disabled = tts.stopping || (tts.ws === null && tts.sources.size === 0);
}

function ttsStatus(status, bad) {
  state.tts.status = status;
  show("tts-status", status, bad);
  ttsButtons();
}

function silence() {
  for (const source of tts.sources) {
    try { source.stop(); } catch (_) { /* not started yet */ }
  }
  tts.sources.clear();
  tts.playhead = 0;
  state.tts.playing = 0;
}

// Schedule one chunk of PCM16 right after the previous one: playback starts on the first.
function feed(bytes, rate) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength >> 1;
  if (!n) return;
  const buffer = tts.ctx.createBuffer(1, n, rate);
  const samples = buffer.getChannelData(0);
  for (let i = 0; i < n; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
  const source = tts.ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(tts.ctx.destination);
  const at = Math.max(tts.ctx.currentTime + 0.02, tts.playhead);
  source.onended = () => {
    if (tts.sources.delete(source)) state.tts.played += 1;
    state.tts.playing = tts.sources.size;
    if (!tts.sources.size && tts.ws === null && state.tts.status === "playing…") {
      ttsStatus("done");
    } else {
      ttsButtons();
    }
  };
  source.start(at);
  tts.sources.add(source);
  state.tts.playing = tts.sources.size;
  tts.playhead = at + buffer.duration;
  state.tts.fed += 1;
  state.tts.fedSamples += n;
}

function decode(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

async function speak() {
  const key = keyValue();
  const text = $("tts-text").value.trim();
  if (!key) { ttsStatus("paste a key first", true); return; }
  if (!text) { ttsStatus("type some text first", true); return; }
  if (tts.ws || tts.starting) return;
  rememberKey();
  tts.starting = true;
  try {
    tts.ctx = tts.ctx || new AudioContext();
    await tts.ctx.resume();
  } finally {
    tts.starting = false;
  }
  silence();
  const provider = $("tts-endpoint").value;
  const entry = endpoints("tts").find((e) => e.provider === provider);
  const rate = ttsRate(entry);
  Object.assign(state.tts, { receivedBytes: 0, chunks: 0, fed: 0, fedSamples: 0, played: 0,
    ttfaMs: null, sampleRate: rate, voice: null, interrupted: null, playing: 0,
    playingAtStop: null, errors: [] });
  tts.stopping = false;
  const init = { type: "init", codec: "pcm16", sample_rate_hz: rate };
  if ($("tts-voice").value) init.voice_id = $("tts-voice").value;
  let ws;
  try {
    ws = new WebSocket(wsUrl(`/v1/tts/${provider}-websocket-stream`), [`bearer.${key}`]);
  } catch (err) {  // a key that is not a valid subprotocol token
    ttsStatus(`cannot connect: ${err.message || err}`, true);
    return;
  }
  tts.ws = ws;
  ttsStatus("connecting…");
  ttsFigures();
  ws.onopen = () => {
    tts.sentAt = performance.now();  // as `slng-fast say` measures: the socket is open
    ws.send(JSON.stringify(init));
    ws.send(JSON.stringify({ type: "input_text", text }));
    ws.send(JSON.stringify({ type: "flush" }));
  };
  ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    switch (event.type) {
      case "ready":
        state.tts.voice = event.session.voice_id;
        if (!tts.stopping) ttsStatus(`speaking (${event.session.voice_id || "default voice"})`);
        break;
      case "audio_chunk": {
        if (tts.stopping) break;  // on its way before the stop: not played
        const bytes = decode(event.data);
        if (state.tts.ttfaMs === null) state.tts.ttfaMs = performance.now() - tts.sentAt;
        state.tts.receivedBytes += bytes.byteLength;
        state.tts.chunks += 1;
        feed(bytes, rate);
        ttsFigures();
        break;
      }
      case "audio_end":
        state.tts.interrupted = event.interrupted;
        ws.close(1000, "done");
        break;
      case "error":
        state.tts.errors.push(event.code);
        ttsStatus(`error ${event.code}: ${event.message}`, true);
        break;
      default:
        break;
    }
  };
  ws.onclose = (event) => {
    tts.ws = null;
    if (state.tts.errors.length) ttsStatus(`${state.tts.status} (${closeReason(event)})`, true);
    else if (state.tts.interrupted === true) ttsStatus("stopped");
    else if (state.tts.interrupted === false) ttsStatus(tts.sources.size ? "playing…" : "done");
    else ttsStatus(closeReason(event), true);
  };
}

function stopSpeaking() {
  if (!tts.ws && !tts.sources.size) return;
  state.tts.playingAtStop = tts.sources.size;
  silence();
  if (!tts.ws) { ttsStatus("stopped"); return; }  // all received: only the player to stop
  tts.stopping = true;
  if (tts.ws.readyState === WebSocket.OPEN) tts.ws.send(JSON.stringify({ type: "stop" }));
  else tts.ws.close();
  ttsStatus("stopping…");
}

// ---- speech to text -------------------------------------------------------------------

const stt = { ws: null, ctx: null, stream: null, node: null, finishing: false };

function sttStatus(status, bad) {
  state.stt.status = status;
  show("stt-status", status, bad);
  $("stt-record").disabled = stt.ws !== null;
  $("stt-stop").disabled = stt.ws === null || stt.finishing;
}

function sttText() {
  $("stt-stable").textContent = state.stt.stable;
  $("stt-partial").textContent = state.stt.partial;
  $("stt-final").textContent = state.stt.finalText || "";
  show("stt-sent", `${formatBytes(state.stt.sentBytes)} (${state.stt.sentFrames} frames at ${state.stt.sampleRate} Hz)`);
}

function releaseMicrophone() {
  if (stt.node) { stt.node.port.onmessage = null; stt.node.disconnect(); stt.node = null; }
  if (stt.stream) { stt.stream.getTracks().forEach((t) => t.stop()); stt.stream = null; }
  if (stt.ctx) { stt.ctx.close(); stt.ctx = null; }
}

async function record() {
  const key = keyValue();
  if (!key) { sttStatus("paste a key first", true); return; }
  if (stt.ws) return;
  rememberKey();
  Object.assign(state.stt, { sentBytes: 0, sentFrames: 0, partials: 0, stable: "",
    partial: "", finalText: null, errors: [] });
  stt.finishing = false;
  try {
    stt.stream = await navigator.mediaDevices.getUserMedia({ audio: {
      channelCount: 1, echoCancellation: false, noiseSuppression: false,
      autoGainControl: false } });
    stt.ctx = new AudioContext();
    await stt.ctx.audioWorklet.addModule("/playground/mic-worklet.js");
  } catch (err) {
    releaseMicrophone();
    sttStatus(`no microphone: ${err.message || err}`, true);
    return;
  }
  const ctx = stt.ctx;
  const rate = ctx.sampleRate;
  state.stt.sampleRate = rate;
  const model = $("stt-endpoint").value;
  let ws;
  try {
    ws = new WebSocket(wsUrl(`/v1/stt/${model}-websocket-stream`), [`bearer.${key}`]);
  } catch (err) {  // a key that is not a valid subprotocol token
    releaseMicrophone();
    sttStatus(`cannot connect: ${err.message || err}`, true);
    return;
  }
  ws.binaryType = "arraybuffer";
  stt.ws = ws;
  sttStatus("connecting…");
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "start", sample_rate: rate, encoding: "pcm16", language: "en" }));
    const source = ctx.createMediaStreamSource(stt.stream);
    const node = new AudioWorkletNode(ctx, "pcm16-frames");
    const mute = ctx.createGain();  // keeps the node pulled without playing the mic back
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(ctx.destination);
    node.port.onmessage = (message) => {
      if (ws.readyState !== WebSocket.OPEN || stt.finishing) return;
      ws.send(message.data);
      state.stt.sentBytes += message.data.byteLength;
      state.stt.sentFrames += 1;
      if (state.stt.sentFrames % 25 === 0) sttText();
    };
    stt.node = node;
    ctx.resume();
  };
  ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    switch (event.type) {
      case "ready":
        if (!stt.finishing) sttStatus("listening — speak, then press Stop");
        break;
      case "transcript":
        if (event.is_final) {
          state.stt.stable = (state.stt.stable + " " + event.text).trim();
          state.stt.partial = "";
        } else {
          state.stt.partial = event.text;
          state.stt.partials += 1;
        }
        sttText();
        break;
      case "final_transcript":
        state.stt.finalText = event.text;
        state.stt.partial = "";
        sttText();
        if (stt.finishing) ws.close(1000, "done");
        break;
      case "error":
        state.stt.errors.push(event.code);
        sttStatus(`error ${event.code}: ${event.message}`, true);
        break;
      default:
        break;
    }
  };
  ws.onclose = (event) => {
    stt.ws = null;
    releaseMicrophone();
    if (state.stt.finalText !== null && stt.finishing) sttStatus("done");
    else sttStatus(`${state.stt.errors.length ? state.stt.status + " " : ""}(${closeReason(event)})`, true);
  };
}

function stopRecording() {
  if (!stt.ws) return;
  stt.finishing = true;
  releaseMicrophone();
  if (stt.ws.readyState === WebSocket.OPEN) {
    stt.ws.send(JSON.stringify({ type: "finalize" }));
    sttStatus("finishing…");
  } else {
    stt.ws.close();
  }
}

// ---- wiring ---------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved) { $("key").value = saved; $("remember").checked = true; }
  $("key").addEventListener("change", loadCatalogue);
  $("key-form").addEventListener("submit", (event) => {  // Enter or Load voices
    event.preventDefault();
    loadCatalogue();
  });
  $("remember").addEventListener("change", rememberKey);
  $("tts-endpoint").addEventListener("change", fillVoices);
  $("tts-speak").addEventListener("click", speak);
  $("tts-stop").addEventListener("click", stopSpeaking);
  $("stt-record").addEventListener("click", record);
  $("stt-stop").addEventListener("click", stopRecording);
  if (saved) loadCatalogue();
  else show("catalogue-status", "paste a key, then Load voices");
});
