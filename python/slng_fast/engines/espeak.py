"""eSpeak NG text-to-speech through ctypes.

eSpeak NG is GPL-3.0. This module loads it with ctypes from the ``espeakng-loader``
wheel and must only ever be imported inside the espeak engine's own process
(``python -m slng_fast.engines espeak``); the gateway reaches that process over a
local WebSocket and never imports this module.

eSpeak keeps its state in globals and is not re-entrant, so a process holds one
:class:`EspeakSynth` (:meth:`EspeakSynth.shared`) and a lock makes every synthesis
run alone. ``espeak_Synth`` is called through ``ctypes.CDLL``, which releases the
GIL while eSpeak works; the GIL is taken again only for the short callback that
copies each buffer of samples out.

Voices. A voice is written ``base`` or ``base+variant``:

- ``base`` is looked up, case-insensitively, as an eSpeak identifier
  (``gmw/en-US``), the identifier's last part (``en-us``: this is the ``id`` that
  :meth:`EspeakSynth.voices` reports), a voice name (``English (America)``), or a
  language code (``en``, ``zh``, ``es-mx``: the voice eSpeak prefers for it);
- ``variant`` is one of :meth:`EspeakSynth.variants`, by file name (``f3``,
  ``klatt``) or name (``female3``), case-insensitively;
- a variant alone (``f3``) is applied to the voice chosen by the language.

Anything else raises :class:`VoiceError` naming what was not found. eSpeak's own
lookup is not used for validation because it silently keeps the previous voice
or drops an unknown variant.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_VOICE",
    "RATE_MAX",
    "RATE_MIN",
    "RATE_NORMAL",
    "EspeakError",
    "EspeakSynth",
    "SynthesisResult",
    "Variant",
    "Voice",
    "VoiceChoice",
    "VoiceError",
    "validate_rate",
]

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_PARAM_RATE = 1
_EE_OK = 0

RATE_MIN = 80
"""Slowest speaking rate eSpeak accepts, in words per minute."""
RATE_MAX = 450
"""Fastest speaking rate eSpeak accepts without its sonic speed-up, in words per minute."""
RATE_NORMAL = 175
"""eSpeak's default speaking rate, in words per minute."""

DEFAULT_VOICE = "en-us"
"""Voice used when neither a voice nor a language is asked for."""

_GENDERS = {1: "male", 2: "female"}


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded or reported a failure."""


class VoiceError(ValueError):
    """A voice, variant, language or rate that this eSpeak cannot use."""


@dataclass(frozen=True)
class Voice:
    """One eSpeak voice as ``espeak_ListVoices`` describes it."""

    id: str
    """Short id: the identifier's last part, lower case (``en-us``)."""
    name: str
    identifier: str
    """eSpeak's identifier, the voice file under ``espeak-ng-data/voices`` (``gmw/en-US``)."""
    languages: tuple[str, ...]
    """Language codes, lower case, the voice's own first."""
    priorities: tuple[int, ...]
    """eSpeak's preference for each language (lower is preferred)."""
    gender: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "identifier": self.identifier,
            "languages": list(self.languages),
            "gender": self.gender,
        }


@dataclass(frozen=True)
class Variant:
    """A voice variant (``espeak-ng-data/voices/!v``): pitch, timbre, speed changes."""

    id: str
    """File name, as eSpeak wants it after ``+`` (``f3``, ``Mr serious``)."""
    name: str
    gender: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "gender": self.gender}


@dataclass(frozen=True)
class VoiceChoice:
    """A resolved voice: what :meth:`EspeakSynth.resolve_voice` returns."""

    voice: Voice
    variant: Variant | None = None

    @property
    def id(self) -> str:
        return self.voice.id if self.variant is None else f"{self.voice.id}+{self.variant.id}"

    @property
    def espeak_name(self) -> str:
        """The exact string for ``espeak_SetVoiceByName``."""
        base = self.voice.identifier
        return base if self.variant is None else f"{base}+{self.variant.id}"


@dataclass(frozen=True)
class SynthesisResult:
    samples: int
    """Samples delivered to ``on_audio``."""
    cancelled: bool
    """True when :meth:`EspeakSynth.cancel` (or ``on_audio`` returning True) cut it short."""


# -- ctypes declarations -------------------------------------------------------------


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        # pairs of (priority byte, NUL-terminated code), ended by a zero byte
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


def _load_library(library_path: str | None) -> ctypes.CDLL:
    if library_path is None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EspeakError(
                "the espeak engine needs the espeakng-loader package (pip install espeakng-loader)"
            ) from exc
        library_path = espeakng_loader.get_library_path()
    try:
        lib = ctypes.CDLL(library_path)
    except OSError as exc:
        raise EspeakError(f"cannot load eSpeak NG from {library_path}: {exc}") from exc

    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Cancel.argtypes = []
    lib.espeak_Cancel.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    return lib


def _parse_languages(address: int | None) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    if not address:
        return out
    while True:
        priority = ctypes.string_at(address, 1)[0]
        if priority == 0:
            return out
        code = ctypes.string_at(address + 1)
        out.append((priority, code.decode("utf-8", "replace").lower()))
        address += 2 + len(code)


def _list(lib: ctypes.CDLL, spec: _Voice | None) -> list[_VoiceRecord]:
    array = lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
    records = []
    i = 0
    # The array is a static buffer inside eSpeak: copy everything out at once.
    while array[i]:
        v = array[i].contents
        records.append(
            _VoiceRecord(
                name=(v.name or b"").decode("utf-8", "replace").strip(),
                identifier=(v.identifier or b"").decode("utf-8", "replace"),
                languages=_parse_languages(v.languages),
                gender=_GENDERS.get(v.gender, ""),
            )
        )
        i += 1
    return records


@dataclass(frozen=True)
class _VoiceRecord:
    name: str
    identifier: str
    languages: list[tuple[int, str]]
    gender: str


def validate_rate(rate: object) -> int:
    """Check a speaking rate in words per minute; return it as eSpeak takes it."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise VoiceError(f"rate must be a number of words per minute, got {rate!r}")
    if not RATE_MIN <= rate <= RATE_MAX:
        raise VoiceError(f"rate {rate} is outside {RATE_MIN}..{RATE_MAX} words per minute")
    return int(round(rate))


class EspeakSynth:
    """eSpeak NG in synchronous retrieval mode, streaming PCM16 through a callback.

    One per process: use :meth:`shared`. All methods are thread-safe;
    :meth:`synthesize` runs one call at a time and :meth:`cancel` may be called from
    any thread.
    """

    exclusive = True
    """eSpeak is process-global: the server runs one synthesis at a time."""

    _shared: EspeakSynth | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(
        cls,
        *,
        buffer_ms: int = 60,
        library_path: str | None = None,
        data_path: str | None = None,
    ) -> EspeakSynth:
        """The process's synthesizer, initialising eSpeak on first use.

        The arguments matter only on that first call: by default the library and
        its data come from the ``espeakng-loader`` wheel.
        """
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls(
                    buffer_ms=buffer_ms,
                    library_path=library_path,
                    data_path=data_path,
                    _key=_SHARED_KEY,
                )
            return cls._shared

    def __init__(
        self,
        *,
        buffer_ms: int = 60,
        library_path: str | None = None,
        data_path: str | None = None,
        _key: object = None,
    ) -> None:
        if _key is not _SHARED_KEY:
            raise TypeError("eSpeak is process-global: use EspeakSynth.shared()")
        if not 10 <= buffer_ms <= 1000:
            raise ValueError(f"buffer_ms {buffer_ms} is outside 10..1000")
        self._lib = _load_library(library_path)
        if data_path is None:
            import espeakng_loader

            data_path = espeakng_loader.get_data_path()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, buffer_ms, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data_path}")
        self.sample_rate: int = rate
        """Output sample rate in Hz (22050 for eSpeak NG)."""
        self.version: str = (self._lib.espeak_Info(None) or b"").decode()

        # Held for the process's life: eSpeak keeps the raw pointer.
        self._callback = _SynthCallback(self._on_samples)
        self._lib.espeak_SetSynthCallback(self._callback)

        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._token: threading.Event | None = None
        self._sink: Callable[[bytes], object] | None = None
        self._sink_error: BaseException | None = None
        self._samples = 0
        self._current_voice: str | None = None

        self._voices = tuple(self._load_voices())
        self._variants = tuple(self._load_variants())
        self._index_voices()

    # -- voices ------------------------------------------------------------------------

    def _load_voices(self) -> list[Voice]:
        voices = []
        for r in _list(self._lib, None):
            codes = tuple(code for _, code in r.languages)
            voices.append(
                Voice(
                    id=r.identifier.rsplit("/", 1)[-1].lower(),
                    name=r.name,
                    identifier=r.identifier,
                    languages=codes,
                    priorities=tuple(p for p, _ in r.languages),
                    gender=r.gender,
                )
            )
        return voices

    def _load_variants(self) -> list[Variant]:
        spec = _Voice()
        keep = ctypes.c_char_p(b"variant")
        spec.languages = ctypes.cast(keep, ctypes.c_void_p)
        out = []
        for r in _list(self._lib, spec):
            if not r.identifier.startswith("!v/"):
                continue
            out.append(Variant(id=r.identifier[3:], name=r.name, gender=r.gender))
        return out

    def _index_voices(self) -> None:
        by_key: dict[str, Voice] = {}
        # Later sources never override earlier ones: identifier, short id, name.
        for v in self._voices:
            by_key.setdefault(v.identifier.lower(), v)
        for v in self._voices:
            by_key.setdefault(v.id, v)
        for v in self._voices:
            by_key.setdefault(v.name.lower(), v)
        self._by_key = by_key

        best: dict[str, tuple[int, int, Voice]] = {}
        for order, v in enumerate(self._voices):
            for priority, code in zip(v.priorities, v.languages):
                rank = (priority, order)
                if code not in best or rank < best[code][:2]:
                    best[code] = (priority, order, v)
        self._by_language = {code: entry[2] for code, entry in best.items()}

        variants: dict[str, Variant] = {}
        for var in self._variants:
            variants.setdefault(var.id.lower(), var)
        for var in self._variants:
            variants.setdefault(var.name.lower(), var)
        self._variant_by_key = variants

    def voices(self) -> list[Voice]:
        """Every voice eSpeak lists (variants and MBROLA voices excluded)."""
        return list(self._voices)

    def variants(self) -> list[Variant]:
        return list(self._variants)

    def languages(self) -> list[str]:
        """Every language code some voice speaks, sorted."""
        return sorted(self._by_language)

    def voice_for_language(self, language: str) -> Voice:
        """The voice eSpeak prefers for ``language``; ``en-au`` falls back to ``en``."""
        code = language.strip().lower().replace("_", "-")
        if not code:
            raise VoiceError("language is empty")
        parts = code.split("-")
        while parts:
            found = self._by_language.get("-".join(parts))
            if found is not None:
                return found
            parts.pop()
        raise VoiceError(f"eSpeak has no voice for language {language!r}")

    def resolve_voice(self, voice: str | None = None, language: str | None = None) -> VoiceChoice:
        """Turn a voice and/or language into an eSpeak voice, or raise :class:`VoiceError`.

        ``voice`` wins over ``language``; a ``language`` that is given is still checked.
        """
        if voice is not None and not isinstance(voice, str):
            raise VoiceError(f"voice must be a string, got {voice!r}")
        if language is not None and not isinstance(language, str):
            raise VoiceError(f"language must be a string, got {language!r}")
        by_language = self.voice_for_language(language) if language else None

        if voice is None or not voice.strip():
            return VoiceChoice(by_language or self._by_key[DEFAULT_VOICE])

        base_key, plus, variant_key = voice.strip().partition("+")
        base_key = base_key.strip().lower()
        variant: Variant | None = None
        if plus:
            variant = self._variant_by_key.get(variant_key.strip().lower())
            if variant is None:
                raise VoiceError(
                    f"unknown eSpeak variant {variant_key.strip()!r} in voice {voice!r}"
                )
        if not base_key:
            if variant is None:
                raise VoiceError(f"voice {voice!r} names nothing")
            return VoiceChoice(by_language or self._by_key[DEFAULT_VOICE], variant)

        base = self._by_key.get(base_key) or self._by_language.get(base_key.replace("_", "-"))
        if base is None:
            lone = self._variant_by_key.get(base_key) if not plus else None
            if lone is not None:
                return VoiceChoice(by_language or self._by_key[DEFAULT_VOICE], lone)
            raise VoiceError(f"unknown eSpeak voice {voice.strip()!r}")
        return VoiceChoice(base, variant)

    def check_rate(self, rate: float) -> None:
        """Raise :class:`VoiceError` for a rate eSpeak cannot speak at."""
        validate_rate(rate)

    # -- synthesis ---------------------------------------------------------------------

    def _on_samples(self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: object) -> int:
        # Runs on the synthesizing thread, inside espeak_Synth.
        if self._cancelled():
            return 1
        if count > 0 and wav:
            data = ctypes.string_at(wav, count * 2)
            if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
                import array

                a = array.array("h", data)
                a.byteswap()
                data = a.tobytes()
            self._samples += count
            sink = self._sink
            try:
                stop = sink(data) if sink is not None else None
            except BaseException:
                # Never let an exception cross the C boundary: stop and let
                # synthesize() notice through the cancel flag.
                self._cancel.set()
                self._sink_error = sys.exc_info()[1]
                return 1
            if stop is True or self._cancelled():
                self._cancel.set()
                return 1
        return 0

    def _cancelled(self) -> bool:
        token = self._token
        return self._cancel.is_set() or (token is not None and token.is_set())

    def synthesize(
        self,
        text: str,
        voice: str | VoiceChoice | None = None,
        language: str | None = None,
        rate: int | float | None = None,
        on_audio: Callable[[bytes], object] | None = None,
        cancel: threading.Event | None = None,
    ) -> SynthesisResult:
        """Speak ``text``, handing PCM16 mono little-endian pieces to ``on_audio``.

        Pieces are about ``buffer_ms`` long (eSpeak NG's floor is 60 ms) and come
        while eSpeak works, so the first one arrives long before the whole text is
        spoken. ``on_audio`` runs on the calling thread; returning ``True`` from it
        stops the synthesis, and an exception from it stops the synthesis and is
        raised here. Setting the ``cancel`` event (from any thread, even before the
        call gets the lock) stops this call at its next piece of audio; what eSpeak
        still held of the text is discarded, so the next call starts clean. Blocks
        until done or cancelled; waits for any other synthesis in the process to
        finish first.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        choice = voice if isinstance(voice, VoiceChoice) else self.resolve_voice(voice, language)
        wpm = RATE_NORMAL if rate is None else validate_rate(rate)
        encoded = text.encode("utf-8", "replace") + b"\0"

        with self._lock:
            self._cancel.clear()
            self._token = cancel
            self._sink = on_audio
            self._sink_error = None
            self._samples = 0
            try:
                if self._current_voice != choice.espeak_name:
                    status = self._lib.espeak_SetVoiceByName(choice.espeak_name.encode())
                    if status != _EE_OK:
                        self._current_voice = None
                        raise VoiceError(f"eSpeak refused voice {choice.id!r} ({status})")
                    self._current_voice = choice.espeak_name
                self._lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
                if text.strip() and not self._cancelled():
                    status = self._lib.espeak_Synth(
                        encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                    )
                    if status != _EE_OK:
                        raise EspeakError(f"espeak_Synth failed ({status})")
                cancelled = self._cancelled()
                if cancelled:
                    # Drop whatever eSpeak still holds of the aborted text.
                    self._lib.espeak_Cancel()
                error = self._sink_error
                if error is not None:
                    raise error
                return SynthesisResult(samples=self._samples, cancelled=cancelled)
            finally:
                self._sink = None
                self._token = None
                self._sink_error = None
                self._cancel.clear()

    def cancel(self) -> None:
        """Stop whatever synthesis is in progress at its next buffer of audio.

        Safe from any thread. A call still waiting for the lock is not affected: to
        cancel one particular call, pass it a ``cancel`` event instead.
        """
        if self._lock.locked():
            self._cancel.set()

    @property
    def busy(self) -> bool:
        return self._lock.locked()


_SHARED_KEY = object()
