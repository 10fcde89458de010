"""Audio from other machines: asking the recorder that has it, and the token that lets you.

In a shared archive every session names the recorder whose disk has its
audio. Audio stays there: `play`, `clip` and `supercut` of another machine's
moment ask that recorder's `pipeline serve` for just the stretch they need
(``GET /api/audio/<session key>.wav?start=S&end=E``, at most
:data:`MAX_SPAN_SECONDS` a request), at the address it registered in the
``recorders`` table. Clients on other machines must send the server's token
(``Authorization: Bearer …``; never in a URL): `pipeline serve` keeps it in
its ``--token-file``, created on first use, and the other machines read it
from ``token_file``/``token`` in their config or ``$PIPELINE_TOKEN``. A
recorder that cannot be reached, never said where it serves, refuses the
token or has deleted the audio is one :class:`~pipeline.errors.RemoteAudioError`
line that says so.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import numpy as np
import soundfile as sf
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from . import schema
from .config import TOKEN_ENV, check_token
from .database import db_errors
from .errors import ConfigError, RemoteAudioError

if TYPE_CHECKING:  # httpx loads only when audio is fetched: every command imports this
    import httpx

TOKEN_FILE_NAME = "serve.token"  # in the data home, when `serve --host` has no --token-file
MAX_SPAN_SECONDS = 600.0  # one request never asks for more (a longer moment takes several)
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0


# --- the token ---------------------------------------------------------------------------


def server_token(path: Path) -> tuple[str, bool]:
    """The token in ``path``, made there first if there is none (readable by its owner
    only); and whether it was made now."""
    path = Path(path).expanduser()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path), False
    except OSError as exc:
        raise ConfigError(f"cannot create the token file {path} ({exc.strerror})") from exc
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def read_token(path: Path) -> str:
    """The token a token file holds; ConfigError names the file (never its contents)."""
    path = Path(path).expanduser()
    try:
        return check_token(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"cannot read the token file {path} ({exc.strerror}); copy it from the machine "
            "whose `pipeline serve` made it"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"the token file {path} does not hold a token: it {exc}") from exc


@dataclass(frozen=True)
class Elsewhere:
    """How this machine gets audio that is not on its disk: the token the other
    recorders' `pipeline serve` want (given, or in a file read when first needed),
    and the object store holding uploaded segments (its credentials come from
    boto3's own chain)."""

    token: str | None = None
    token_file: str | Path | None = None
    s3_endpoint_url: str | None = None

    @classmethod
    def resolve(cls, **given) -> Elsewhere:
        """As given; without a token or token file, the token in ``$PIPELINE_TOKEN``."""
        unsaid = given.get("token") is None and not given.get("token_file")
        if unsaid and os.environ.get(TOKEN_ENV):
            try:
                given["token"] = check_token(os.environ[TOKEN_ENV])
            except ValueError as exc:
                raise ConfigError(f"${TOKEN_ENV} is not valid: it {exc}") from None
        return cls(**given)

    def bearer(self) -> str | None:
        """The token to send: the one given, else the token file's."""
        if self.token is None and self.token_file:
            return read_token(Path(self.token_file))
        return self.token


# --- the server says where it answers ------------------------------------------------------


def advertised_url(option: str | None, port: int) -> str:
    """Where other machines reach this `serve`: ``--advertise`` (the port added if it has
    none), else ``http://<host name>:<port>``."""
    if not option:
        return f"http://{socket.gethostname()}:{port}"
    url = option.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--advertise must be an http:// URL such as http://office-pc:8765 ({url})"
        )
    return url if parts.port else f"{url}:{port}"


def advertise(engine, recorder: str, url: str) -> None:
    """Put ``url`` in the recorder's row, so other machines know where to ask."""
    with db_errors(engine):
        for attempt in range(2):  # a recorder's heartbeat may make the row at the same moment
            try:
                with DbSession(engine) as db, db.begin():
                    row = db.get(schema.Recorder, recorder)
                    if row is None:
                        row = schema.Recorder(name=recorder, host=socket.gethostname())
                        db.add(row)
                    row.serve_url = url
                return
            except IntegrityError:
                if attempt:
                    raise


# --- the client: a stretch of a session from the recorder that has it ----------------------


def fetch_span(
    engine, session: schema.Session, start: float, end: float, token: str | None
) -> np.ndarray:
    """Frames [start, end) seconds of another recorder's session, asked of its `serve`."""
    import httpx

    base = _serve_url(engine, session.recorder)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    pieces = []
    with httpx.Client(timeout=timeout, headers=headers) as client:
        at = start
        while True:
            until = min(end, at + MAX_SPAN_SECONDS)
            piece = _get(client, base, session, at, until, token is not None)
            pieces.append(piece)
            wanted = round(until * session.rate) - max(0, round(at * session.rate))
            if until >= end or len(piece) < wanted:
                break  # the end asked for, or the session's
            at = until
    return np.concatenate(pieces)


def _serve_url(engine, recorder: str) -> str:
    with db_errors(engine), DbSession(engine) as db:
        row = db.get(schema.Recorder, recorder)
    if row is None or not row.serve_url:
        raise RemoteAudioError(
            f"recorded on {recorder}, which has not said where its audio can be fetched; "
            "run `pipeline serve --host 0.0.0.0` there with this archive's --db"
        )
    return row.serve_url.rstrip("/")


def _get(
    client: httpx.Client,
    base: str,
    session: schema.Session,
    start: float,
    end: float,
    with_token: bool,
) -> np.ndarray:
    import httpx

    name = session.recorder
    url = f"{base}/api/audio/{quote(session.key, safe='')}.wav"
    try:
        # repr: the shortest text that is the same float there, so pieces meet exactly
        response = client.get(url, params={"start": repr(start), "end": repr(end)})
    except httpx.TransportError as exc:
        raise RemoteAudioError(
            f"recorded on {name}, which is not reachable ({_why(exc)} at {base}); "
            "start `pipeline serve` there"
        ) from exc
    if response.status_code == 401:
        raise RemoteAudioError(
            f"recorded on {name}, whose `pipeline serve` at {base} refused the token; "
            "set token_file to a copy of its token file"
            if with_token
            else f"recorded on {name}, whose `pipeline serve` at {base} wants its token; "
            f"set token_file (or ${TOKEN_ENV}) to a copy of its token file"
        )
    if response.status_code != 200:
        said = _error_of(response)
        raise RemoteAudioError(
            f"recorded on {name}: {said}"
            if response.status_code in (404, 410)
            else f"recorded on {name}, whose `pipeline serve` at {base} answered "
            f"{response.status_code}: {said}"
        )
    return _frames(response.content, session, name)


def _frames(body: bytes, session: schema.Session, name: str) -> np.ndarray:
    try:
        frames, rate = sf.read(io.BytesIO(body), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise RemoteAudioError(f"recorded on {name}, which sent something else than audio") from exc
    if rate != session.rate or frames.shape[1] != session.channels:
        raise RemoteAudioError(
            f"recorded on {name}, which sent {rate} Hz, {frames.shape[1]} ch audio for a "
            f"{session.rate} Hz, {session.channels} ch session; is it the same archive?"
        )
    return frames


def _why(exc: httpx.TransportError) -> str:
    """What went wrong on the way, in a few words."""
    import httpx

    if isinstance(exc, httpx.ConnectTimeout):
        return f"no answer in {CONNECT_TIMEOUT_SECONDS:g} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"no audio in {READ_TIMEOUT_SECONDS:g} s"
    said = " ".join(str(exc).split()) or type(exc).__name__
    if "refused" in said.lower():
        return "connection refused"
    return said.split("] ", 1)[-1]


def _error_of(response: httpx.Response) -> str:
    """The server's one-line error (``{"error": …}``), or the start of what it said."""
    try:
        said = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        said = response.text[:200] or response.reason_phrase
    return " ".join(said.split())
