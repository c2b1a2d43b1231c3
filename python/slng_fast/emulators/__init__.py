"""Local stand-ins for the cloud providers' own protocols (ElevenLabs, Deepgram, Cartesia,
Kyutai, WhisperLive), making real speech with the built-in engines. They follow each
provider's public documentation, not our adapters, and each is also tested with the
provider's official SDK where one exists.

Each module ``slng_fast.emulators.<name>`` has ``ENGINE`` (``"espeak"`` or
``"pocketsphinx"``: the built-in engine it reaches over WebSocket, so eSpeak NG stays in
its own process) and ``async def serve_emulator(host, port, *, engine_url, api_key=None,
task_status=...)`` which reports the bound port through ``task_status``."""

EMULATORS = ("elevenlabs", "deepgram", "cartesia", "kyutai", "whisper", "slng")
