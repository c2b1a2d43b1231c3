"""An STT session moving to its next provider (issue 13 point 4): the chain asked for at
``start``, and the switch: the old upstream closed, ``provider_switched``, the backup
opened with the session's own parameters and fed the audio kept since the last final
transcript (`protocol.fallback.ReplayBuffer`), with the finalizes still unanswered in
their places, so words spoken during the switch are heard. Functions of an
`SttSession`; pure, like it."""

from __future__ import annotations

from functools import partial
from typing import Any

from slng_fast import errors
from slng_fast.errors import GatewayError
from slng_fast.protocol import commands as cmd
from slng_fast.protocol.actions import Action, CloseUpstream, OpenUpstream, SendUpstream
from slng_fast.protocol.audio import AudioIn
from slng_fast.protocol.failover_session import Link
from slng_fast.protocol.fallback import (
    PROVIDER_DOWN,
    ReplayBuffer,
    first_entry,
)
from slng_fast.vocabulary import Settings

# An `SttSession` (not imported: it imports this module).
SttSession = Any


def stt_links(session: SttSession, raw: Any, start: cmd.Start) -> list[Link]:
    """The session's chain: its own model, then each entry checked now."""
    links = [Link(session.endpoint.name, session.endpoint, session.dialect,
                  Settings(language=start.language), dict(start.extras))]
    for entry in session.chain_entries(raw):
        endpoint, dialect = session.resolve_link(entry)
        if endpoint.kind != "stt":
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"fallback {entry.provider!r} is not an STT model")
        own = cmd.parse_start(entry.fields)
        language = own.language or start.language
        if language and endpoint.languages and language not in endpoint.languages:
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"fallback {entry.provider!r}: language {language!r} is not "
                               f"offered; languages: {', '.join(endpoint.languages)}")
        links.append(Link(entry.provider, endpoint, dialect, Settings(language=language),
                          dict(own.extras)))
    return links


def start_chain(session: SttSession, links: list[Link], now: float) -> list[Action]:
    """Take the chain (and the replay buffer it needs); start on the first entry not
    marked down (``provider_switched`` ``provider_down``) when the model itself is."""
    session.chain = links
    if not session.has_chain or session.failover is None:
        return []
    width = cmd.CODEC_SAMPLE_WIDTH[session.client_codec]
    session.replay = ReplayBuffer(int(session.failover.replay_s * session.client_rate * width))
    at = first_entry(session.chain_names(), session.failover.is_down, now)
    if at == 0:
        return []
    old = session.serving
    session._begin_link(at)
    return [session._switched(old, PROVIDER_DOWN)]


def new_audio_in(session: SttSession) -> AudioIn:
    return AudioIn(codec=session.client_codec, sample_rate=session.client_rate,
                   model_rate=session.dialect.model_rate,
                   model_format=session.dialect.model_format,
                   framing=session.dialect.uplink_framing or "binary",
                   max_message_bytes=session.tier.max_audio_chunk_bytes)


def open_serving(session: SttSession) -> list[Action]:
    link = session.chain[session.chain_at] if session.chain else None
    language = link.settings.language if link else None
    extras = link.extras if link else {}
    session.upstream_epoch += 1
    session.upstream_open = True
    actions: list[Action] = [OpenUpstream(session.upstream_epoch, session.dialect.request())]
    return actions + [SendUpstream(f) for f in session.dialect.open_frames(language, extras)]


def switch(session: SttSession, reason: str, now: float) -> list[Action]:
    """Move to the next model of the chain (exhausted: ``provider_unavailable``, 1013)."""
    actions: list[Action] = session._switch(reason, now, partial(close_upstream, session),
                                            partial(_move, session, reason, now))
    return actions


def close_upstream(session: SttSession) -> list[Action]:
    session.upstream_open = False
    return [CloseUpstream(session.upstream_epoch)]


def _move(session: SttSession, reason: str, now: float, old: str, at: int) -> list[Action]:
    """Serve link ``at`` and replay to it the audio kept, the finalizes in their places."""
    session._begin_link(at)
    # The backup hears again all the audio since the last final transcript, so its final
    # holds every word of it: the old provider's segments would be said twice.
    session.segments.clear()
    actions: list[Action] = [session._switched(old, reason)]
    actions += open_serving(session)
    received = session.audio.received_bytes if session.audio is not None else 0
    session.audio = new_audio_in(session)
    for kind, data in session.replay.replay() if session.replay is not None else []:
        if kind == "audio":
            pcm = session.audio.push(data)
            actions += [SendUpstream(f) for f in session.dialect.audio(pcm, now)]
        else:
            actions += [SendUpstream(f) for f in session.dialect.finalize(now)]
    session.audio.received_bytes = received
    if session.finalizes_pending:
        session.finalize_waiting_since = now
    session.last_upstream = now
    return actions
