"""The voices the product documents and the providers' public documents name, for the
endpoints whose voices the gateway cannot ask a local engine about: the SLNG-hosted
family (seeds: "Available Endpoints") and the cloud providers' stock voices. Plain data;
the catalogue (``providers/catalogue.py``) marks every one ``"source": "documented"``.

A gender or language is given only where a public document states it (for Kokoro, its
voice naming: first letter the language, ``a`` American English, second the gender);
``None``/empty where none does. Cloud accounts hold many more voices (cloned, shared,
newer models): any voice id the provider accepts works, listed here or not."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DocumentedVoice:
    id: str
    name: str | None = None
    languages: tuple[str, ...] = ()
    gender: str | None = None  # "female", "male", or None when no document says


def _same(ids: tuple[str, ...], languages: tuple[str, ...],
          gender: str | None = None) -> tuple[DocumentedVoice, ...]:
    return tuple(DocumentedVoice(i, i, languages, gender) for i in ids)


EN = ("en",)
# Orpheus Indic's languages (seeds, the orpheus-indic example).
INDIC = ("hi", "bn", "ta", "te", "mr", "gu", "kn", "ml")
# Coqui XTTS v2's languages (its model card).
XTTS = ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn",
        "ja", "hu", "ko", "hi")
# CosyVoice's languages (its README): Chinese, English, Japanese, Korean, Cantonese.
COSYVOICE = ("zh", "en", "ja", "ko", "yue")

VOICES: dict[str, tuple[DocumentedVoice, ...]] = {
    # -- the SLNG-hosted family: the voice names of the product documents ---------------
    "orpheus": (DocumentedVoice("tara", "tara", EN, "female"),
                *_same(("luna", "stella", "athena", "hera"), EN)),
    "orpheus-indic": (DocumentedVoice("kanak", "kanak", INDIC),),
    "kokoro": (DocumentedVoice("af", "af", ("en-us",), "female"),
               DocumentedVoice("af_bella", "af_bella", ("en-us",), "female"),
               DocumentedVoice("af_sky", "af_sky", ("en-us",), "female"),
               DocumentedVoice("am_adam", "am_adam", ("en-us",), "male")),
    "cosyvoice": (DocumentedVoice("emma", "emma", COSYVOICE),),
    "chatterbox": _same(("nova", "echo", "sky", "zara", "max"), EN),
    "xtts": (DocumentedVoice("Claribel Dervla", "Claribel Dervla", XTTS, "female"),),
    # -- cloud providers: stock voices from their public documents -------------------
    # ElevenLabs' premade voices (its voice library); the gateway's default first.
    "elevenlabs": (
        DocumentedVoice("21m00Tcm4TlvDq8ikWAM", "Rachel", ("en-us",), "female"),
        DocumentedVoice("AZnzlk1XvdvUeBnXmlld", "Domi", ("en-us",), "female"),
        DocumentedVoice("pNInz6obpgDQGcFmaJgB", "Adam", ("en-us",), "male"),
        DocumentedVoice("ErXwobaYiN019PkySvjV", "Antoni", ("en-us",), "male"),
        DocumentedVoice("TxGEqnHWrfWFTfGW9XjX", "Josh", ("en-us",), "male"),
    ),
    # Deepgram Aura (the model name is the voice); the gateway's default first.
    "deepgram": (
        DocumentedVoice("aura-asteria-en", "Asteria", ("en-us",), "female"),
        DocumentedVoice("aura-luna-en", "Luna", ("en-us",), "female"),
        DocumentedVoice("aura-stella-en", "Stella", ("en-us",), "female"),
        DocumentedVoice("aura-athena-en", "Athena", ("en-gb",), "female"),
        DocumentedVoice("aura-hera-en", "Hera", ("en-us",), "female"),
        DocumentedVoice("aura-orion-en", "Orion", ("en-us",), "male"),
        DocumentedVoice("aura-arcas-en", "Arcas", ("en-us",), "male"),
        DocumentedVoice("aura-perseus-en", "Perseus", ("en-us",), "male"),
        DocumentedVoice("aura-angus-en", "Angus", ("en-ie",), "male"),
        DocumentedVoice("aura-orpheus-en", "Orpheus", ("en-us",), "male"),
        DocumentedVoice("aura-helios-en", "Helios", ("en-gb",), "male"),
        DocumentedVoice("aura-zeus-en", "Zeus", ("en-us",), "male"),
        DocumentedVoice("aura-2-thalia-en", "Thalia", ("en-us",), "female"),
    ),
    # Cartesia: the voice ids its own examples use; the gateway's default first (its
    # documents give that one no name).
    "cartesia": (
        DocumentedVoice("694f9389-aac1-45b6-b726-9d9369183238", None, EN),
        DocumentedVoice("a0e99841-438c-4a64-b679-ae501e7d6091", "Barbershop Man", EN, "male"),
    ),
}

# STT models: the languages their public documents give (the gateway does not restrict
# a language the endpoint entry does not list; WhisperLive takes Whisper's ~100).
STT_LANGUAGES: dict[str, tuple[str, ...]] = {
    "kyutai": ("en", "fr"),  # kyutai/stt-1b-en_fr
}
