"""AssemblyAI's Universal-Streaming (v3) as an optional, cloud recognition engine.

Nothing here runs unless the user chose ``--engine assemblyai``. The engine
only ever sees what the local voice activity detector cut out as speech (see
:class:`~pipeline.recognize.Transcriber`), so silence, and everything said
while no session is chosen, never leaves the machine.

The protocol, as AssemblyAI documents it (its streaming docs "Message
Sequence", the Streaming API reference, "Common session errors and closures",
the billing FAQ, and the v3 models of its Python SDK):

* connect to ``wss://streaming.assemblyai.com/v3/ws?sample_rate=16000&…`` with
  the API key in the ``Authorization`` header; the server answers ``Begin``;
* send raw pcm_s16le audio as binary messages of 50–1000 ms each, no faster
  than real time (else close code 3007 "Audio Transmission Rate Exceeded");
* ``{"type": "ForceEndpoint"}`` ends the current turn now; the server sends
  ``Turn`` messages (``end_of_turn`` false while it is guessing, then true),
  whose words carry ``start``/``end`` in milliseconds since the stream began;
* ``{"type": "Terminate"}`` ends the session (``Termination``). Billing runs
  while the WebSocket is open, not per second of audio, so idle sessions are
  closed: ``inactivity_timeout`` asks the server to, and the engine terminates
  its session itself before it would reuse a stale one;
* errors come as an ``Error`` message and then a close code: 1008
  "Unauthorized Connection: …" (a bad key, an account problem, or, in older
  docs, too many concurrent sessions), 3005 server error, 3006 invalid
  message, 3007 bad chunk length or too fast, 3008 session expired (3 h),
  3009 too many concurrent sessions. The v2 API's 4001/4002/4029/4102 are
  understood too.

The docs do not say how far ahead of real time a stream may run (so it is
paced to real time, one chunk ahead), what ForceEndpoint answers when no turn
is open (so a missing answer ends the wait after FINAL_TIMEOUT_SECONDS with
the words so far), nor the allowed range of ``inactivity_timeout``.

One session stays open per engine; each utterance is sent in chunks, ended
with ForceEndpoint, and its words are made utterance-relative by subtracting
the samples sent before it. A dropped connection is reopened and the whole
utterance sent again, so words are neither lost nor doubled.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from .errors import EngineAuthError, EngineUnavailable, ModelError, RecognizerError

if TYPE_CHECKING:
    from .recognize import RawWord

log = logging.getLogger(__name__)
# websockets logs the handshake's headers, Authorization included, at DEBUG:
# its own logger, held at INFO, keeps the key out of every log
_WIRE_LOG = logging.getLogger(__name__ + ".wire")
_WIRE_LOG.setLevel(logging.INFO)

DEFAULT_URL = "wss://streaming.assemblyai.com/v3/ws"
KEY_ENV = "ASSEMBLYAI_API_KEY"
URL_ENV = "ASSEMBLYAI_URL"
SPEECH_MODEL = "universal-streaming-english"  # newer docs make speech_model required
LABEL = f"assemblyai:{SPEECH_MODEL}"
RATE = 16000

CHUNK_SECONDS = 0.5  # binary messages must hold 50–1000 ms of audio
MIN_CHUNK_SECONDS = 0.05
OPEN_TIMEOUT_SECONDS = 10.0  # handshake, and then the Begin message
FINAL_TIMEOUT_SECONDS = 10.0  # ForceEndpoint → the Turn with end_of_turn
TERMINATE_TIMEOUT_SECONDS = 2.0  # Terminate → Termination
IDLE_SECONDS = 30  # inactivity_timeout (seconds): an idle session stops being billed
EXPIRY_MARGIN_SECONDS = 60.0  # open a new session before the 3-hour one expires
STALE_WORD_SECONDS = 0.1  # a word this far before the utterance belongs to an earlier one
RETRY_DELAYS = (0.0, 1.0, 2.0, 4.0)  # dropped or unreachable: ~7 s, then EngineUnavailable
BUSY_DELAYS = (2.0, 5.0, 10.0, 20.0)  # too many sessions, or audio too fast: back off longer

_AUTH, _BUSY, _DROP, _REJECTED = "auth", "busy", "drop", "rejected"
_RATE_WORD = re.compile(r"\brate\b")


@dataclass(frozen=True)
class AssemblyAISettings:
    """Where and as whom to connect; picklable, so it travels in an EngineSpec.

    ``realtime``: pace the audio to real time, as the service demands; only a
    test server may turn it off. The key is left out of ``repr``.
    """

    key: str = field(repr=False)
    url: str = DEFAULT_URL
    realtime: bool = True

    @classmethod
    def resolve(cls, key: str | None = None, url: str | None = None) -> AssemblyAISettings:
        """The given key and URL (the config file's), else the environment's, else the default.

        No key is one line that says how to set one.
        """
        key = key or os.environ.get(KEY_ENV)
        if not key:
            raise EngineAuthError(
                f"the assemblyai engine needs an AssemblyAI API key: set {KEY_ENV}, or "
                "assemblyai_api_key in the config file (`pipeline config show` says where it is)"
            )
        return cls(key, url or os.environ.get(URL_ENV) or DEFAULT_URL)


def check_installed() -> None:
    """The engine's one extra dependency is optional: say how to install it."""
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            "the assemblyai engine needs the websockets package: run "
            "`uv sync --extra assemblyai` (or pip install 'pipeline[assemblyai]')"
        ) from exc


class _Lost(Exception):
    """The session ended under us; ``kind`` says whether to retry, and how."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def _kind(code: int | None, reason: str) -> str:
    """Sort a close code and reason into: bad key, busy, our mistake, or a drop."""
    text = reason.lower()
    if (
        code in (3009, 4029, 4102, 1013)
        or "concurrent" in text
        or "too many" in text
        or _RATE_WORD.search(text)
    ):
        return _BUSY
    if code in (1008, 4001, 4002, 4003) or "unauthori" in text or "not authorized" in text:
        return _AUTH
    if code in (3006, 3007, 4000, 4100, 4101) or "invalid" in text or "violation" in text:
        return _REJECTED
    return _DROP  # 3005 server error, 3008 expired, 1006 no close frame, …


class AssemblyAIEngine:
    """An :class:`~pipeline.recognize.Engine` over one AssemblyAI streaming session."""

    rate = RATE
    name = LABEL

    def __init__(
        self,
        settings: AssemblyAISettings | None = None,
        *,
        retry_delays: tuple[float, ...] | None = None,
        busy_delays: tuple[float, ...] | None = None,
    ) -> None:
        """``retry_delays``/``busy_delays``: the waits before each new try (default:
        RETRY_DELAYS after a drop, BUSY_DELAYS when the service is busy)."""
        check_installed()
        from websockets import exceptions
        from websockets.sync.client import connect

        self._connect, self._wsx = connect, exceptions
        self.settings = settings or AssemblyAISettings.resolve()
        self.retry_delays = RETRY_DELAYS if retry_delays is None else retry_delays
        self.busy_delays = BUSY_DELAYS if busy_delays is None else busy_delays
        self._ws = None
        self._sent = 0  # samples sent in this session: word times count from its start
        self._began = 0.0  # when the session began (monotonic), for pacing
        self._used = 0.0  # when it was last used (monotonic), to retire idle sessions
        self._expires = float("inf")  # when the service will end it (epoch seconds)
        atexit.register(self.close)  # an unterminated session is billed for up to 3 hours

    def partial(self, pcm: bytes) -> str:
        """No running guess: audio goes out only once the local VAD has closed an utterance."""
        return ""

    def transcribe(self, pcm: bytes) -> list[RawWord]:
        """Send one utterance and return its words, retrying on a drop or a busy service."""
        tries = {_DROP: 0, _BUSY: 0}
        while True:
            try:
                self._retire_stale()
                if self._ws is None:
                    self._open()
                words = self._utterance(pcm)
                self._used = time.monotonic()
                return words
            except _Lost as lost:
                self._discard()
                if lost.kind == _AUTH:
                    raise EngineAuthError(
                        f"AssemblyAI refused the API key ({lost.detail}); check {KEY_ENV} "
                        "(or assemblyai_api_key in the config file) and the account"
                    ) from None
                if lost.kind == _REJECTED:
                    raise RecognizerError(
                        f"AssemblyAI rejected what pipeline sent ({lost.detail}); "
                        "this is a bug in pipeline, please report it"
                    ) from None
                delays = self.busy_delays if lost.kind == _BUSY else self.retry_delays
                n = tries[lost.kind]
                if n >= len(delays):
                    count = f"{n + 1} tries" if n else "1 try"
                    raise EngineUnavailable(
                        f"AssemblyAI is unavailable ({lost.detail}; {count}); the audio "
                        "is kept on disk and recognized when the recognizer restarts"
                    ) from None
                tries[lost.kind] += 1
                log.warning("AssemblyAI: %s; trying again in %.1f s", lost.detail, delays[n])
                time.sleep(delays[n])

    def close(self) -> None:
        """End the session with Terminate, which stops AssemblyAI's billing clock."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        try:
            ws.send(json.dumps({"type": "Terminate"}))
            deadline = time.monotonic() + TERMINATE_TIMEOUT_SECONDS
            while True:  # in-flight Turns may come first
                msg = json.loads(ws.recv(timeout=max(0.0, deadline - time.monotonic())))
                if msg.get("type") == "Termination":
                    break
        except (self._wsx.ConnectionClosed, OSError, TimeoutError, ValueError):
            pass  # closed already, or slow to say so: either way it ends here
        finally:
            ws.close()

    # --- the session ------------------------------------------------------------

    def _open(self) -> None:
        params = {
            "sample_rate": RATE,
            "encoding": "pcm_s16le",
            "format_turns": "false",  # lower case, no punctuation: stored like local words
            "speech_model": SPEECH_MODEL,
            "inactivity_timeout": IDLE_SECONDS,
        }
        url = self.settings.url
        url += ("&" if "?" in url else "?") + urlencode(params)
        try:
            ws = self._connect(
                url,
                additional_headers={"Authorization": self.settings.key},
                open_timeout=OPEN_TIMEOUT_SECONDS,
                logger=_WIRE_LOG,
            ).__enter__()  # websockets 17.1 wants a with-block; the session outlives one
        except self._wsx.InvalidStatus as exc:
            status = exc.response.status_code
            kind = {401: _AUTH, 403: _AUTH, 429: _BUSY}.get(status, _DROP)
            raise _Lost(kind, f"the handshake was answered with HTTP {status}") from None
        except (self._wsx.InvalidHandshake, OSError, TimeoutError) as exc:
            raise _Lost(_DROP, f"cannot connect: {exc}") from None
        self._ws, self._sent = ws, 0
        begin = self._receive(OPEN_TIMEOUT_SECONDS)
        if begin is None or begin.get("type") != "Begin":
            raise _Lost(_DROP, "the service did not begin a session")
        self._began = self._used = time.monotonic()
        self._expires = _epoch(begin.get("expires_at"))
        log.info("AssemblyAI session %s began", begin.get("id", "?"))

    def _retire_stale(self) -> None:
        """A session idle past the inactivity timeout, or near its 3 hours, is ended first."""
        if self._ws is None:
            return
        idle = time.monotonic() - self._used >= IDLE_SECONDS - 1
        if idle or time.time() >= self._expires - EXPIRY_MARGIN_SECONDS:
            self.close()

    def _discard(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    def _utterance(self, pcm: bytes) -> list[RawWord]:
        ws = self._ws
        base = self._sent  # the stream's samples before this utterance
        turns = _Turns()
        try:
            for chunk in _chunks(pcm):
                self._pace(len(chunk) // 2)
                ws.send(chunk)
                self._sent += len(chunk) // 2
                while (msg := self._receive(0)) is not None:  # what has come back so far
                    turns.take(msg)
            ws.send(json.dumps({"type": "ForceEndpoint"}))
            turns.forced = True
            deadline = time.monotonic() + FINAL_TIMEOUT_SECONDS
            while not turns.done:
                msg = self._receive(deadline - time.monotonic())
                if msg is None:
                    if turns.open:
                        raise _Lost(_DROP, "no final transcript came back")
                    break  # nothing was heard: the service had no turn to end
                turns.take(msg)
        except self._wsx.ConnectionClosed as exc:
            raise self._lost(exc) from None
        offset = base / RATE
        return [
            (w["text"], w["start"] / 1000 - offset, w["end"] / 1000 - offset, _confidence(w))
            for w in turns.words
            if w["start"] / 1000 >= offset - STALE_WORD_SECONDS
        ]

    def _receive(self, timeout: float) -> dict | None:
        """The next message, None if none came in ``timeout``.

        An Error message ends the session: the close that follows carries the
        same code, but its reason may only say "See Error message for details".
        """
        try:
            msg = json.loads(self._ws.recv(timeout=max(0.0, timeout)))
        except TimeoutError:
            return None
        except self._wsx.ConnectionClosed as exc:
            raise self._lost(exc) from None
        if msg.get("type") == "Error":
            code, text = msg.get("error_code"), str(msg.get("error", ""))
            raise _Lost(_kind(code, text), f"error {code}: {text}")
        if msg.get("type") == "Termination":
            raise _Lost(_DROP, "the service ended the session")
        return msg

    @staticmethod
    def _lost(exc) -> _Lost:
        """What a close means, from its code and reason; none at all is a dropped connection."""
        frame = exc.rcvd
        if frame is None:
            return _Lost(_DROP, "the connection dropped")
        detail = f"closed with code {frame.code}" + (f": {frame.reason}" if frame.reason else "")
        return _Lost(_kind(frame.code, frame.reason), detail)

    def _pace(self, samples: int) -> None:
        """Hold the stream to real time (the service closes a faster one); one chunk may lead."""
        if not self.settings.realtime:
            return
        ahead = (self._sent + samples) / RATE - (time.monotonic() - self._began) - CHUNK_SECONDS
        if ahead > 0:
            time.sleep(ahead)


class _Turns:
    """The Turn messages of one utterance: final words, and whether a turn is still open."""

    def __init__(self) -> None:
        self.words: list[dict] = []
        self.open = False  # a turn has partial words the service has not ended yet
        self.forced = False  # ForceEndpoint was sent
        self.done = False  # a turn ended after ForceEndpoint, and none is open

    def take(self, msg: dict) -> None:
        if msg.get("type") != "Turn":
            return
        if msg.get("end_of_turn"):
            self.words += msg.get("words", [])
            self.open = False
            self.done = self.forced
        else:
            self.open = True


def _confidence(word: dict) -> float:
    return float(word.get("confidence", 1.0))


def _epoch(value) -> float:
    """Begin's ``expires_at`` (epoch seconds in the docs' example); unknown: never."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def _chunks(pcm: bytes) -> list[bytes]:
    """The utterance in near-equal pieces of at most CHUNK_SECONDS and at least 50 ms."""
    samples = len(pcm) // 2
    least = round(MIN_CHUNK_SECONDS * RATE)
    if samples < least:  # a sliver: padded with silence up to the shortest allowed message
        return [pcm[: samples * 2] + b"\0\0" * (least - samples)]
    most = round(CHUNK_SECONDS * RATE)
    n = -(-samples // most)
    cuts = [samples * i // n for i in range(n + 1)]
    return [pcm[2 * a : 2 * b] for a, b in zip(cuts, cuts[1:], strict=False)]
