"""Upper reference of bench/e2e.py: the cheapest TTS relay Python can host, on ``picows``.

Does what bench/relay_websockets.py does (answers ``init`` with ``ready``, opens the SLNG
upstream, buffers ``input_text`` until ``flush``, turns every binary PCM frame into an
``audio_chunk`` JSON text frame and ``flushed`` into ``audio_end``) with picows's callback
API: frames are handled in the protocol's own callback, with no task or queue per message.
No authentication, limits, ledger, metrics or validation: it is the floor a Python relay
can reach on this machine, not an alternative gateway.

    python bench/relay_picows.py --upstream ws://127.0.0.1:UPORT/ [--port 0]
prints ``listening on ws://127.0.0.1:P``."""

from __future__ import annotations

import argparse
import asyncio
import uuid

import orjson
import pybase64
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_connect,
    ws_create_server,
)

FLUSH = orjson.dumps({"type": "control", "action": "flush"})


class Upstream(WSListener):
    """The SLNG model server's side of one session: PCM in, ``audio_chunk`` out."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sequence = 0
        self.ready = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        session = self.session
        if frame.msg_type == WSMsgType.BINARY:
            pcm = frame.get_payload_as_memoryview()
            session.client.send(WSMsgType.TEXT, orjson.dumps({
                "type": "audio_chunk", "data": pybase64.b64encode(pcm).decode(),
                "sequence": self.sequence, "duration_ms": len(pcm) * 500 / session.rate,
                "context_id": session.context_id}))
            self.sequence += 1
        elif frame.msg_type == WSMsgType.TEXT:
            if not self.ready:  # {"type":"ready","sample_rate":...}
                self.ready = True
                return
            if orjson.loads(frame.get_payload_as_bytes()).get("type") == "flushed":
                session.client.send(WSMsgType.TEXT, orjson.dumps(
                    {"type": "audio_end", "context_id": session.context_id}))
        elif frame.msg_type == WSMsgType.CLOSE:
            session.client.send_close()
            session.client.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.session.client.disconnect()


class Session(WSListener):
    """The client's side: ``init`` opens the upstream; text is held until ``flush``."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.client: WSTransport
        self.upstream: WSTransport | None = None
        self.pending: list[bytes] = []  # frames for the upstream before it is open
        self.buffer: list[str] = []
        self.context_id = str(uuid.uuid4())
        self.rate = 24000

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.client = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close()
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        kind = message.get("type")
        if kind == "init":
            self.rate = int(message.get("sample_rate_hz", 24000))
            transport.send(WSMsgType.TEXT, orjson.dumps(
                {"type": "ready", "context_id": self.context_id}))
            settings = {"voice": message.get("voice_id", "tara")}
            for key in ("max_tokens", "temperature", "top_p"):
                if key in message:
                    settings[key] = message[key]
            self.pending.append(orjson.dumps(settings))
            asyncio.get_running_loop().create_task(self._open(settings["voice"]))
        elif kind == "input_text":
            self.buffer.append(message.get("text", ""))
        elif kind == "flush" and self.buffer:
            self._to_upstream("".join(self.buffer).encode())
            self.buffer.clear()
            self._to_upstream(FLUSH)

    def _to_upstream(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.send(WSMsgType.TEXT, data)

    async def _open(self, voice: str) -> None:
        transport, _ = await ws_connect(lambda: Upstream(self), f"{self.upstream_url}?voice={voice}")
        self.upstream = transport
        for data in self.pending:
            transport.send(WSMsgType.TEXT, data)
        self.pending.clear()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.upstream is not None:
            self.upstream.disconnect()


async def main(args: argparse.Namespace) -> None:
    def factory(request: WSUpgradeRequest) -> Session:
        return Session(args.upstream)

    server = await ws_create_server(factory, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on ws://127.0.0.1:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
