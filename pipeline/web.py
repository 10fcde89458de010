"""The web page: search the archive, see the hits on a timeline, hear each one.

`pipeline serve` runs a small Starlette app under uvicorn over a read-only
:class:`~pipeline.archive.Archive`. It has five routes: the page (one HTML
file shipped in ``pipeline/data/``), ``/api/search`` (hits as JSON; ``fuzzy=1``:
by sound, ``fts=1``: FTS5 syntax, ``rank=1``: best first; ``since``, ``until``,
``session``, ``source`` and ``device`` filter as the CLI's options do),
``/api/show/{id}?around=N`` (a hit's utterance and its neighbours, as
`pipeline show --json`), ``/api/clip/{id}.wav`` (a hit's moment as a WAV file) and
``/api/audio/{session key}.wav?start=S&end=E`` (a stretch of a session
recorded here, for other machines of a shared archive: see
:mod:`pipeline.remote`). A :class:`~pipeline.errors.PipelineError` becomes
``{"error": "one line"}`` with an HTTP status per class, so the page shows
the same messages as the CLI.

The archive holds everything said near this computer, so the server binds
127.0.0.1 unless told otherwise, and answers only requests addressed to a
loopback name there (a web page elsewhere cannot reach it by DNS rebinding).
Bound to another address it wants a token from every client but this
machine's own (``Authorization: Bearer``, compared in constant time); and
a request from this machine addressed to another name needs it too, so a
web page that rebinds its name to 127.0.0.1 still gets nothing.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import io
import ipaddress
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from importlib import resources

import soundfile as sf
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from . import remote
from .archive import Archive, Moment
from .config import Home
from .errors import (
    ConfigError,
    IndexerError,
    NotFoundError,
    PipelineError,
    QueryError,
    RemoteAudioError,
    ReplayError,
)
from .fuzzy import FUZZY_MIN_SCORE
from .replay import DEFAULT_PADDING_SECONDS
from .search import Hit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_LIMIT = 50
MAX_LIMIT = 500  # one request never lists more hits than a page can show
MAX_PADDING_SECONDS = 60.0  # nor cuts more than two minutes of context around a hit
MAX_AROUND = 20  # nor shows more than this many utterances either side of one
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

FILTERS = ("since", "until", "session", "source", "device")  # /api/search's, as the CLI's
SESSION_KEY = re.compile(r"[\w.-]{1,64}")

# an HTTP status per kind of failure (410: the moment's audio is gone or unreadable;
# 502: it is on another machine or in object storage, which failed us; 503: the
# database is locked or damaged); anything else is the server's fault
_STATUS = {
    QueryError: 400,
    NotFoundError: 404,
    RemoteAudioError: 502,
    ReplayError: 410,
    IndexerError: 503,
}


def page_html() -> str:
    """The page, as shipped inside the package."""
    return resources.files("pipeline").joinpath("data", "serve.html").read_text("utf-8")


def content_security_policy(html: str) -> str:
    """A policy that runs only the page's own inline script, found by its hash.

    The page builds everything it shows with ``textContent``; if a bug ever let
    archive text in as markup, a ``<script>`` in it would still not run.
    """
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; media-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def hit_json(h: Hit) -> dict:
    """A hit as the page reads it: words and the matched range to highlight, and its clip
    (not the segment's path on this disk)."""
    return {
        **h.as_json(),
        "utterance_start": round(h.utterance_start, 3),
        "utterance_end": round(h.utterance_end, 3),
        "words": list(h.words),
        "match": list(h.match),
        "audio": h.segment is not None,
        "clip": f"/api/clip/{h.id}.wav",
    }


def wav_bytes(moment: Moment) -> bytes:
    """The moment as a 16-bit PCM WAV file, in memory."""
    buf = io.BytesIO()
    sf.write(buf, moment.frames, moment.rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _wav_response(request: Request, body: bytes) -> Response:
    """A WAV file, or the byte range of it the request asks for."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    wanted = _byte_range(request.headers.get("range"), len(body))
    if wanted is None:
        return Response(body, media_type="audio/wav", headers=headers)
    first, last = wanted
    headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
    return Response(body[first : last + 1], 206, media_type="audio/wav", headers=headers)


def search_filters(request: Request) -> dict:
    """The search's filters from its query parameters (those of `pipeline search`:
    since, until, session, source, device), as :class:`~pipeline.search.Filters` fields;
    the archive reads since and until as the CLI does."""
    return {name: request.query_params.get(name) or None for name in FILTERS}


def _hit_id(request: Request) -> int:
    """The hit id in the request's path; NotFoundError if it is not one."""
    raw = request.path_params["hit_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):  # SQLite's ints are 64-bit
        raise NotFoundError(f"no hit with id {raw[:20]!r}; hit ids are numbers")
    return int(raw)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "") in ("1", "true", "on")


def _number(request: Request, name: str, kind: type, default, lo, hi):
    """A query parameter as ``kind`` within [lo, hi]; QueryError names it otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise QueryError(f"{name} must be a number (got {raw[:20]!r})") from None
    if not lo <= value <= hi:
        raise QueryError(f"{name} must be between {lo} and {hi} (got {raw[:20]})")
    return value


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one ``bytes=a-b`` range asked for, as [first, last]; None for the whole file.

    Browsers ask for ranges to seek in an audio element; several ranges in one
    request, or a range past the end, get the whole file (HTTP allows both).
    """
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not m or m.group(1) == m.group(2) == "":
        return None
    if m.group(1) == "":  # the last N bytes
        first, last = max(0, size - int(m.group(2))), size - 1
    else:
        first = int(m.group(1))
        last = min(size - 1, int(m.group(2))) if m.group(2) else size - 1
    return (first, last) if first <= last else None


def create_app(
    archive: Archive,
    *,
    check_host: bool = True,
    token: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Starlette:
    """The web app over ``archive``; ``check_host`` answers only loopback Host headers;
    ``token``: what a client must send unless it is this machine asking by a loopback name.

    ``on_ready`` is called when the server starts, once its signal handlers are in place.
    """
    html = page_html()
    page_headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    def page(_request: Request) -> Response:
        return HTMLResponse(html, headers=page_headers)

    def api_search(request: Request) -> Response:
        query = request.query_params.get("q", "")
        limit = _number(request, "limit", int, DEFAULT_LIMIT, 1, MAX_LIMIT)
        fuzzy, fts, rank = (_flag(request, name) for name in ("fuzzy", "fts", "rank"))
        filters = search_filters(request)
        hits = archive.search(query, limit=limit, fuzzy=fuzzy, fts=fts, rank=rank, **filters)
        found = {"query": query, "fuzzy": fuzzy, "rank": rank or fuzzy}
        found["hits"] = [hit_json(h) for h in hits]
        if fuzzy and not hits:  # what scores just under the cut-off, as the CLI names it
            closest = archive.closest(query, **filters)
            found["min_score"] = FUZZY_MIN_SCORE
            found["closest"] = hit_json(closest) if closest is not None else None
        return JSONResponse(found)

    def api_show(request: Request) -> Response:
        """A hit's utterance with those before and after it, as `pipeline show --json`."""
        around = _number(request, "around", int, 2, 0, MAX_AROUND)
        said, focus = archive.around(_hit_id(request), around)
        utterances = [s.as_json() for s in said]
        return JSONResponse({"id": said[focus].id, "focus": focus, "utterances": utterances})

    def api_clip(request: Request) -> Response:
        hit_id = _hit_id(request)
        padding = {
            name: _number(request, name, float, DEFAULT_PADDING_SECONDS, 0.0, MAX_PADDING_SECONDS)
            for name in ("before", "after")
        }
        return _wav_response(request, wav_bytes(archive.moment(hit_id, **padding)))

    def api_audio(request: Request) -> Response:
        """A stretch of a session recorded here, for another machine's play or clip:
        read from this home (or its object storage), never asked of a third machine."""
        key = request.path_params["session_key"]
        if not SESSION_KEY.fullmatch(key):
            raise NotFoundError(f"no session {key[:70]!r}; see `pipeline sessions`")
        start = _number(request, "start", float, None, 0.0, 1e9)
        end = _number(request, "end", float, None, 0.0, 1e9)
        if start is None or end is None or not 0 <= end - start <= remote.MAX_SPAN_SECONDS:
            raise QueryError(
                f"start and end are seconds of the session, at most "
                f"{remote.MAX_SPAN_SECONDS:g} apart"
            )
        session = archive.session(key)
        frames = archive.audio_here(session, start, end)
        moment = Moment(frames, session.rate, session.id, start, start + len(frames) / session.rate)
        return _wav_response(request, wav_bytes(moment))

    def failed(_request: Request, exc: Exception) -> Response:
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 500)
        return JSONResponse({"error": str(exc)}, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if on_ready is not None:
            on_ready()
        yield

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/", page),
            Route("/api/search", api_search),
            Route("/api/show/{hit_id}", api_show),
            Route("/api/clip/{hit_id}.wav", api_clip),
            Route("/api/audio/{session_key}.wav", api_audio),
        ],
        exception_handlers={PipelineError: failed},
    )
    app.add_middleware(_Gate, check_host=check_host, token=token)
    return app


class _Gate:
    """ASGI middleware: who may ask.

    With ``check_host`` (a server bound to loopback), a request whose Host is not a
    loopback name is refused (DNS rebinding). Otherwise a request needs the token
    unless it comes from this machine *and* names it by a loopback name: a web page
    that rebinds its own name to this machine's address still needs the token.
    """

    def __init__(self, app, *, check_host: bool, token: str | None) -> None:
        self.app = app
        self.check_host = check_host
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        local_name = _loopback_host_header(scope)
        if self.check_host and not local_name:
            refusal = JSONResponse(
                {"error": "this server answers only http://127.0.0.1 or http://localhost"},
                status_code=421,
            )
        elif (local_name and _loopback_client(scope)) or self._has_token(scope):
            await self.app(scope, receive, send)
            return
        else:
            refusal = JSONResponse(
                {
                    "error": "clients on other machines must send this server's token "
                    "(Authorization: Bearer …, from the file `pipeline serve` named); "
                    "set token_file in their config"
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        await refusal(scope, receive, send)

    def _has_token(self, scope) -> bool:
        """Whether the request carries the token; compared in constant time."""
        if self.token is None:
            return False
        said = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = said.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)


def _loopback_client(scope) -> bool:
    client = scope.get("client")
    return client is not None and is_loopback(client[0])


def _loopback_host_header(scope) -> bool:
    host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
    name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
    return name in LOOPBACK_NAMES


def is_loopback(address: str) -> bool:
    """Whether an address (as bound) is reachable only from this machine."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address.lower() == "localhost"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0 picks a free port); ConfigError says why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError, OverflowError) as exc:
        raise ConfigError(f"cannot serve on host {host!r} ({exc}); try --host 127.0.0.1") from exc
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":  # on Windows the flag would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise ConfigError(
                f"port {port} on {host} is already in use (another `pipeline serve`?); "
                "pick another with --port"
            ) from exc
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"not allowed to listen on {where}; pick a port above 1023 with --port"
            ) from exc
        raise ConfigError(f"cannot listen on {where} ({exc.strerror or exc})") from exc
    sock.setblocking(False)
    return sock


class WebServer:
    """The page's server: binds at once (so errors come before any output), runs until stopped.

    ``run()`` blocks; Ctrl+C or SIGTERM (in the main thread) or :meth:`stop`
    (from another thread) shut it down cleanly, and ``run()`` returns.
    """

    def __init__(
        self,
        home: Home,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        advertise: str | None = None,
        elsewhere: remote.Elsewhere | None = None,
    ) -> None:
        """``token``: what clients on other machines must send (needed unless bound to
        loopback); ``advertise``: where other machines of a shared archive reach this
        server (see :func:`pipeline.remote.advertised_url`), registered for this
        home's recorder; ``elsewhere``: how the page gets audio not on this machine."""
        if token is None and not is_loopback(host):
            raise ConfigError(f"serving on {host} needs a token for the other machines")
        self.archive = Archive(home, elsewhere=elsewhere)
        self.socket = bind(host, port)
        address = self.socket.getsockname()
        self.host, self.port = address[0], address[1]
        self.loopback = is_loopback(self.host)
        self._ready: Callable[[], None] | None = None
        app = create_app(
            self.archive, check_host=self.loopback, token=token, on_ready=self._on_ready
        )
        # the client address is the socket's: no X-Forwarded-For may make a request local;
        # no access log (it would be the only place a request line is written down)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, proxy_headers=False, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self.advertised: str | None = None
        if home.shared and (advertise or not self.loopback):
            try:
                self.advertised = remote.advertised_url(advertise, self.port)
                remote.advertise(self.archive.engine, home.recorder_name, self.advertised)
            except PipelineError:
                self.socket.close()
                raise

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def started(self) -> bool:
        return self._server.started

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until stopped; ``ready`` is called once Ctrl+C would stop it cleanly."""
        self._ready = ready
        try:
            with _signals_end_quietly():
                self._server.run(sockets=[self.socket])
        finally:
            self.socket.close()
            self.archive.engine.dispose()

    def stop(self) -> None:
        self._server.should_exit = True

    def _on_ready(self) -> None:
        if self._ready is not None:
            self._ready()


@contextlib.contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """Let uvicorn's own Ctrl+C/SIGTERM handling be the end of it.

    uvicorn shuts down gracefully on those signals, then raises them again for
    the handlers that were there before; here those do nothing, so `serve`
    returns normally (exit 0) instead of dying by the signal or a traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [signal.SIGINT, signal.SIGTERM]
    before = {sig: signal.signal(sig, lambda *_: None) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
