"""Built-in speech engines, each run as its own process.

- ``espeak``: eSpeak NG text-to-speech (GPL-3.0, loaded only in its own process),
  served in the SLNG model-server dialect;
- ``piper``: Piper neural text-to-speech (``piper-tts``, GPL-3.0-or-later, loaded only
  in its own process), served in the same dialect;
- ``pocketsphinx``: PocketSphinx speech-to-text, served in the unified STT protocol.

Start one with ``python -m slng_fast.engines espeak|piper|pocketsphinx --port N``. This
package's ``__init__`` imports no engine, so importing it never loads eSpeak or Piper.
"""

ENGINES = ("espeak", "piper", "pocketsphinx")
"""Engine names accepted by ``python -m slng_fast.engines``."""
