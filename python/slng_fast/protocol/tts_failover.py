"""A TTS session moving to its next provider (issue 13): the chain asked for at ``init``,
the first-audio deadline, and the switch itself: the old upstream closed, a seam in the
audio of an utterance under way, ``provider_switched``, and the text not yet heard said
again by the backup, in order. Functions of a `TtsSession`; pure, like it."""

from __future__ import annotations

from functools import partial
from typing import Any

from slng_fast import errors
from slng_fast.errors import GatewayError
from slng_fast.protocol import commands as cmd
from slng_fast.protocol.actions import Action, SendClient, SendUpstream
from slng_fast.protocol.failover_session import Link
from slng_fast.protocol.fallback import (
PROVIDER_DOWN,
UNREACHABLE,
first_entry,
pace,
refusal_switches,
speakable,
unheard_rest,
)
from slng_fast.vocabulary import Settings

# A `TtsSession` (not imported: it imports this module).
TtsSession = Any


def tts_links(session: TtsSession, raw: Any, settings: Settings) -> list[Link]:
    """The session's chain: its own provider, then each entry checked now (an unknown
    provider, a voice or language it does not offer, a bad parameter:
    ``invalid_parameter``, and the session is not opened)."""
    links = [Link(session.endpoint.name, session.endpoint, session.dialect, settings)]
    for entry in session.chain_entries(raw):
        endpoint, dialect = session.resolve_link(entry)
        if endpoint.kind != "tts":
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"fallback {entry.provider!r} is not a TTS provider")
        try:
            command = cmd.parse_tts("configure", entry.fields)
        except GatewayError as err:
            raise GatewayError(err.kind, f"fallback {entry.provider!r}: {err.message}") from None
        assert isinstance(command, cmd.Configure)
        own = command.settings
        voice = own.voice_id or endpoint.default_voice
        base = voice.split("+", 1)[0] if voice else None
        if base is not None and endpoint.voices and base not in endpoint.voices:
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"fallback {entry.provider!r}: voice {voice!r} is not offered; "
                               f"voices: {', '.join(endpoint.voices[:20])}")
        if own.language is not None and endpoint.languages \
                and own.language not in endpoint.languages:
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"fallback {entry.provider!r}: language {own.language!r} "
                               f"is not offered")
        links.append(Link(entry.provider, endpoint, dialect,
                          Settings(voice, own.language, own.style, own.extras)))
    return links


def start_chain(session: TtsSession, links: list[Link], now: float) -> list[Action]:
    """Take the chain; when the session's own provider is marked down in this worker,
    start on the first entry that is not (``provider_switched``, reason
    ``provider_down``)."""
    session.chain = links
    if not session.has_chain or session.failover is None:
        return []
    at = first_entry(session.chain_names(), session.failover.is_down, now)
    if at == 0:
        return []
    old = session.serving
    take_link(session, at)
    return [session._switched(old, PROVIDER_DOWN)]


def take_link(session: TtsSession, at: int) -> None:
    link = session._begin_link(at)
    session.voices = link.endpoint.voices
    session.settings = link.settings
    session.dialect.prefer_output(session.sample_rate)


def first_audio_deadline(session: TtsSession) -> float | None:
    """With a chain: when the utterance at the head, which has words, is given up on
    for having no audio yet."""
    if not session.has_chain or session.failover is None or not session.pending:
        return None
    head = session.pending[0]
    if head.empty or not head.speakable or head.audio_ms > 0:
        return None
    deadline: float = head.waiting_since + session.failover.first_audio_s
    return deadline


def utterance_finished(session: TtsSession, utterance: Any, now: float) -> None:
    chars, ms = session.paced
    session.paced = (chars + len(utterance.text), ms + utterance.audio_ms)
    if session.pending:
        session.pending[0].waiting_since = now


def upstream_failed(session: TtsSession, epoch: int, now: float,
                    status: int | None = None) -> list[Action] | None:
    """The upstream could not be opened: with a chain and a cause another provider
    could fix (the network, a timeout, a 5xx), the next one; else None (as without)."""
    if (session.has_chain and not session.ended and epoch == session.upstream_epoch
            and refusal_switches(status)):
        session.upstream_open = False
        return switch(session, UNREACHABLE, now)
    return None


def switch(session: TtsSession, reason: str, now: float) -> list[Action]:
    """Move to the next provider of the chain (or, exhausted, ``provider_unavailable``
    and close 1013). An utterance whose audio had started is finished from its first
    sentence not yet heard; the later ones, and the text not yet flushed, are sent
    whole."""
    actions: list[Action] = session._switch(reason, now, session._close_upstream,
                                            partial(_move, session, reason, now))
    return actions


def _move(session: TtsSession, reason: str, now: float, old: str, at: int) -> list[Action]:
    actions: list[Action] = []
    head = session.pending[0] if session.pending else None
    if session.audio is not None:
        if head is not None and head.audio_ms > 0:
            frames, ms = session.audio.seam()
            head.audio_ms += ms
            session.usage.audio_ms += ms
            actions += [SendClient(f, text=True) for f in frames]
        else:
            session.audio.forget_source()
    take_link(session, at)
    actions.append(session._switched(old, reason))
    return actions + resend(session, now)


def resend(session: TtsSession, now: float) -> list[Action]:
    """Open the serving provider and send it what is pending, in order."""
    actions: list[Action] = session._open_upstream()
    ms_per_char = pace(session.paced[1], session.paced[0])
    for utterance in session.pending:
        if utterance.empty:
            continue
        text = unheard_rest(utterance.text, utterance.audio_ms, ms_per_char)
        frames = (session.dialect.input_text(text) + session.dialect.flush()) if text.strip() else []
        utterance.empty = not frames
        utterance.speakable = speakable(text)
        utterance.waiting_since = now
        session.credit_resent(len(text))
        actions += [SendUpstream(f) for f in frames]
    while session.pending and session.pending[0].empty:  # nothing left to say of it
        actions.append(session._audio_end(session.pending.pop(0), interrupted=False))
    if session.unflushed:
        rest = "".join(session.unflushed)
        session.credit_resent(len(rest))
        actions += [SendUpstream(f) for f in session.dialect.input_text(rest)]
    return actions


def silent_head(session: TtsSession, now: float) -> list[Action]:
    """The provider answered nothing for an utterance with no words (spaces,
    punctuation): no failure, no switch. It ends (not interrupted); the upstream, whose
    state is unknown now, is reopened for what follows."""
    actions = session._close_upstream() if session.upstream_open else []
    actions.append(session._audio_end(session.pending.pop(0), interrupted=False))
    while session.pending and session.pending[0].empty:
        actions.append(session._audio_end(session.pending.pop(0), interrupted=False))
    if session.pending or session.unflushed:
        actions += resend(session, now)
    return actions
