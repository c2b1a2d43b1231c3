"""The engines' state as the parent writes it to a worker's stdin and the worker applies
it: over a real pipe, into the registry's own dicts (changed in place, never replaced)."""

from __future__ import annotations

import os

import orjson
import trio

from slng_fast.gateway.engine_feed import apply_state, follow_engines


def test_a_state_line_changes_the_dicts_in_place():
    urls = {"espeak": "ws://127.0.0.1:1/", "pocketsphinx": "ws://127.0.0.1:2/"}
    info = {"espeak": {"voices": ["en"]}}
    same_urls, same_info = urls, info
    apply_state(orjson.dumps({"urls": {"espeak": "ws://127.0.0.1:3/"},
                              "info": {"espeak": {"voices": ["fr"]}}}), urls, info)
    assert urls is same_urls and info is same_info
    assert urls == {"espeak": "ws://127.0.0.1:3/"}  # a gone engine is gone here too
    assert info == {"espeak": {"voices": ["fr"]}}


def test_a_line_that_is_not_a_state_changes_nothing():
    urls = {"espeak": "ws://127.0.0.1:1/"}
    for bad in (b"", b"{", b"[]", b'{"urls": 1}', b'{"urls": {}}'):
        apply_state(bad, urls, {})
    assert urls == {"espeak": "ws://127.0.0.1:1/"}


async def test_the_worker_follows_every_line_until_the_pipe_ends():
    read_fd, write_fd = os.pipe()
    urls: dict[str, str] = {}
    info: dict[str, dict] = {}
    states = [{"urls": {"espeak": f"ws://127.0.0.1:{port}/"}, "info": {}} for port in (1, 2)]
    data = b"".join(orjson.dumps(state) + b"\n" for state in states)
    async with trio.open_nursery() as nursery:
        writer = trio.lowlevel.FdStream(write_fd)
        nursery.start_soon(follow_engines, trio.lowlevel.FdStream(read_fd), urls, info)
        await writer.send_all(data[:10])  # a line may arrive in pieces
        await writer.send_all(data[10:])
        await writer.aclose()
    assert urls == {"espeak": "ws://127.0.0.1:2/"}
