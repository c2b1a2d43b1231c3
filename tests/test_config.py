"""The config file: tier numbers default to PROTOCOL.md section 6 and every one can change."""

from __future__ import annotations

import pytest

from slng_fast.config import DEFAULT_TIERS, ConfigError, load_config


def test_defaults_are_protocol_section_6():
    free, pro, ent = (DEFAULT_TIERS[t] for t in ("free", "pro", "enterprise"))
    assert (free.max_connections, pro.max_connections, ent.max_connections) == (1, 5, 50)
    assert (free.max_duration_s, pro.max_duration_s, ent.max_duration_s) == (300, 1800, 7200)
    assert (free.max_message_bytes, pro.max_message_bytes, ent.max_message_bytes) == (
        16384, 32768, 131072)
    assert (free.messages_per_minute, pro.messages_per_minute, ent.messages_per_minute) == (
        20, 60, 120)
    assert (free.max_text_chars, pro.max_text_chars, ent.max_text_chars) == (500, 2000, 10000)
    assert (free.max_audio_chunk_bytes, pro.max_audio_chunk_bytes,
            ent.max_audio_chunk_bytes) == (16384, 32768, 65536)
    assert {t.idle_timeout_s for t in DEFAULT_TIERS.values()} == {300}
    assert {t.heartbeat_s for t in DEFAULT_TIERS.values()} == {30}


def test_every_tier_number_can_be_changed(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text("""
[gateway]
port = 9000
data_dir = "%s"

[tiers.free]
max_connections = 3
max_duration_s = 60
max_message_bytes = 1000
messages_per_minute = 7
max_text_chars = 50
max_audio_chunk_bytes = 2000
idle_timeout_s = 10
heartbeat_s = 5

[providers.orpheus]
url = "ws://models.example:9000/orpheus"
api_key = "secret"
""" % (tmp_path / "data"))
    config = load_config(path, port=None)
    free = config.tiers["free"]
    assert (free.max_connections, free.max_duration_s, free.max_message_bytes,
            free.messages_per_minute, free.max_text_chars, free.max_audio_chunk_bytes,
            free.idle_timeout_s, free.heartbeat_s) == (3, 60, 1000, 7, 50, 2000, 10, 5)
    assert config.tiers["pro"] == DEFAULT_TIERS["pro"]
    assert config.port == 9000 and config.data_dir == tmp_path / "data"
    assert config.providers["orpheus"].url == "ws://models.example:9000/orpheus"
    assert config.providers["orpheus"].api_key == "secret"
    assert load_config(path, port=1234).port == 1234  # the command line wins


@pytest.mark.parametrize("body, message", [
    ("[tiers.gold]\nmax_connections = 1\n", "unknown tier"),
    ("[tiers.free]\nmax_widgets = 1\n", "unknown limit"),
    ("[tiers.free]\nmax_connections = -1\n", "positive"),
    ("[tiers.free\n", "cannot read config"),
    ("[gateway]\nmetrics_key = \"\"\n", "metrics_key"),
    ("[gateway]\nhealthz_needs_key = true\n", "needs metrics_key"),
    ("[gateway]\nmetrics_key = \"k\"\nhealthz_needs_key = \"yes\"\n", "true or false"),
])
def test_bad_config_is_a_clear_error(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_metrics_key_from_the_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SLNG_FAST_METRICS_KEY", raising=False)
    path = tmp_path / "gateway.toml"
    path.write_text("[gateway]\nport = 9000\n")
    config = load_config(path)
    assert config.metrics_key is None and config.healthz_needs_key is False  # open
    monkeypatch.setenv("SLNG_FAST_METRICS_KEY", "from-env")
    assert load_config(path).metrics_key == "from-env"
    path.write_text("[gateway]\nmetrics_key = \"from-file\"\nhealthz_needs_key = true\n")
    config = load_config(path)
    assert config.metrics_key == "from-file" and config.healthz_needs_key is True


def test_piper_voices_from_the_config(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('[engines.piper]\nvoices = ["~/voices/en_GB-alba-medium.onnx"]\n')
    config = load_config(path)
    assert "piper" in config.engines
    assert len(config.piper_voices) == 1
    assert config.piper_voices[0].endswith("/voices/en_GB-alba-medium.onnx")
    assert not config.piper_voices[0].startswith("~")
    assert load_config().piper_voices == ()
    path.write_text('[engines.piper]\nvoices = "one.onnx"\n')
    with pytest.raises(ConfigError, match="engines.piper"):
        load_config(path)


def test_provider_fallback_and_warm(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[providers.orpheus]\nurl = "ws://m/orpheus"\nfallback = ["kokoro", "espeak"]\n'
                    "warm = 2\n[gateway]\nfirst_audio_timeout_s = 3\nstt_replay_s = 4\n")
    config = load_config(path)
    assert config.providers["orpheus"].fallback == ("kokoro", "espeak")
    assert config.providers["orpheus"].options == {"warm": 2}
    assert config.first_audio_timeout_s == 3 and config.stt_replay_s == 4
    path.write_text('[providers.orpheus]\nfallback = "kokoro"\n')
    with pytest.raises(ConfigError):
        load_config(path)


def test_openai_aliases_and_upload_limits_from_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[gateway]\nmax_upload_bytes = 1000\nhttp_body_timeout_s = 5\n'
                    '[openai.aliases]\ntts-1 = "espeak"\nmy-voice = "kokoro"\n')
    config = load_config(path)
    assert config.model_aliases["tts-1"] == "espeak" and config.model_aliases["my-voice"] == "kokoro"
    assert config.model_aliases["whisper-1"] == "pocketsphinx"  # the defaults stay
    assert (config.max_upload_bytes, config.http_body_timeout_s) == (1000, 5)
    path.write_text('[openai.aliases]\ntts-1 = 3\n')
    with pytest.raises(ConfigError, match="openai.aliases"):
        load_config(path)


def test_the_voice_listing_cache_and_timeout(tmp_path):
    defaults = load_config()
    assert (defaults.voices_cache_ttl_s, defaults.voices_fetch_timeout_s) == (600.0, 3.0)
    path = tmp_path / "gw.toml"
    path.write_text("[gateway]\nvoices_cache_ttl_s = 60\nvoices_fetch_timeout_s = 0.5\n")
    config = load_config(path)
    assert (config.voices_cache_ttl_s, config.voices_fetch_timeout_s) == (60, 0.5)
