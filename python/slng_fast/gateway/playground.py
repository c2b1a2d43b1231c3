"""The playground: one page on the gateway's own port (``GET /`` or ``/playground``) to
hear a TTS endpoint and talk to an STT endpoint from a browser, with a key pasted into
the page. Its files ship in the wheel (``gateway/static/playground/``); no build step
and nothing fetched from elsewhere, which the Content-Security-Policy holds the page to.

Pure lookup: the gateway's HTTP hook asks `answer` and sends what it gets back, so the
page needs no key to load (its requests to ``/v1/voices`` and the WebSockets do)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

# The page's own origin only: scripts, styles, fetch and WebSocket (CSP 3 lets 'self'
# match ws:/wss: on the same host and port); no inline code, no framing, no forms.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
)

FILES = {  # path -> (file, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground": ("index.html", "text/html; charset=utf-8"),
    "/playground/": ("index.html", "text/html; charset=utf-8"),
    "/playground/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/playground/mic-worklet.js": ("mic-worklet.js", "text/javascript; charset=utf-8"),
    "/playground/style.css": ("style.css", "text/css; charset=utf-8"),
    "/playground/icon.svg": ("icon.svg", "image/svg+xml"),
}


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


def answer(path: str, method: str) -> Answer | None:
    """The response for ``path`` (no query string), or None when it is not one of the
    playground's (the gateway's other routes then decide)."""
    found = FILES.get(path)
    if found is None:
        return None
    if method not in ("GET", "HEAD"):
        return Answer(405, "text/plain; charset=utf-8", b"the playground answers GET\n",
                      (("Allow", "GET, HEAD"),))
    name, content_type = found
    return Answer(200, content_type, read(name), HEADERS)


@cache
def read(name: str) -> bytes:
    """A file of the page, from the installed package (read once)."""
    return resources.files("slng_fast.gateway").joinpath(
        "static", "playground", name).read_bytes()
