"""Providers held down (issue 13 point 5), over real sockets and a real redis-server:
a failure published by one worker is seen by another; a probe that answers brings the
provider back in both."""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed, serve_websocket

from harness import free_port
from slng_fast.gateway.health import HealthWatch
from slng_fast.gateway.native_transport import open_native_upstream
from slng_fast.gateway.redis_client import open_redis
from slng_fast.vocabulary import UpstreamRequest


async def test_down_is_shared_and_a_probe_brings_it_back(nursery, redis_server):
    port = free_port()

    def target(name: str) -> UpstreamRequest:
        return UpstreamRequest(f"ws://127.0.0.1:{port}/")

    async with open_redis(redis_server.url) as redis_a, open_redis(redis_server.url) as redis_b:
        a = HealthWatch(target, open_native_upstream, redis=redis_a, names=("orpheus",))
        b = HealthWatch(target, open_native_upstream, redis=redis_b, names=("orpheus",))
        a.health.backoff = b.health.backoff = (0.2, 0.4)
        await nursery.start(a.run)
        await nursery.start(b.run)
        a.failed("orpheus", "unreachable")
        with trio.fail_after(10):
            while not b.is_down("orpheus", trio.current_time()):
                await trio.sleep(0.05)
            while a.probes < 2:  # nothing listens: the probes fail, it stays down
                await trio.sleep(0.05)
        assert a.is_down("orpheus", trio.current_time())

        async def answer(request):
            ws = await request.accept()
            try:
                await ws.get_message()
            except ConnectionClosed:
                pass  # the probe closes at once

        await nursery.start(serve_websocket, answer, "127.0.0.1", port, None)
        with trio.fail_after(10):
            while a.is_down("orpheus", trio.current_time()) \
                    or b.is_down("orpheus", trio.current_time()):
                await trio.sleep(0.05)
