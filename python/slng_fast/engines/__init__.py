"""Built-in speech engines, each run as its own process.

- ``espeak``: eSpeak NG text-to-speech (GPL-3.0, loaded only in its own process),
  served in the SLNG model-server dialect;
- ``pocketsphinx``: PocketSphinx speech-to-text, served in the unified STT protocol.

Start one with ``python -m slng_fast.engines espeak|pocketsphinx --port N``. This
package's ``__init__`` imports neither engine, so importing it never loads eSpeak.
"""

ENGINES = ("espeak", "pocketsphinx")
"""Engine names accepted by ``python -m slng_fast.engines``."""
