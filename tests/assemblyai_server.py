"""A local stand-in for AssemblyAI's Universal-Streaming (v3) WebSocket API.

It speaks the documented protocol on 127.0.0.1 — Begin; partial Turns while
audio comes in; a final Turn with words on ForceEndpoint; Termination on
Terminate; an Error message and a close code for a bad key, a busy account,
a chunk of the wrong length or audio faster than real time — and it
recognizes the audio it receives with PocketSphinx. So the words, and their
times in milliseconds since the stream began, come from what the engine
really sent: a wrong offset or a lost chunk shows in the archive.

It can also misbehave on purpose: refuse handshakes (a service that is
down), close as "too many concurrent sessions", or drop the connection
without a close frame once a number of audio bytes has arrived.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from pocketsphinx import Decoder
from websockets.sync.server import serve

RATE = 16000
PARTIAL_EVERY_BYTES = RATE * 2  # a partial Turn per second of audio
REALTIME_TOLERANCE_SECONDS = 1.5  # how far ahead of real time the stream may run
_FILLER = re.compile(r"^[<\[].*[>\]]$")
_ALT_PRON = re.compile(r"\(\d+\)$")
GUESS = "guesswork"  # the word of every partial Turn: it must never be stored
# websockets logs the request's headers at DEBUG (the key must not show in a test's
# logs), and the server's thread may log after a test's capture has closed
_LOG = logging.getLogger(__name__)
_LOG.setLevel(logging.WARNING)


@dataclass
class Connection:
    """What one client connection sent."""

    headers: object  # websockets.Headers: case-insensitive
    query: dict
    chunks: list[int] = field(default_factory=list)  # bytes per binary message
    messages: list[str] = field(default_factory=list)  # types of the JSON messages
    audio: bytearray = field(default_factory=bytearray)


class FakeAssemblyAI:
    """Run with ``with FakeAssemblyAI(...) as server:``; point the engine at ``server.url``."""

    def __init__(
        self,
        key: str = "test-key",
        *,
        refuse: int = 0,
        busy: int = 0,
        busy_close: tuple[int, str] = (
            3009,
            "Unauthorized Connection: Too many concurrent sessions",
        ),
        drop_after: int | None = None,
        realtime: bool = False,
    ) -> None:
        self.key = key
        self.refuse, self.busy, self.busy_close = refuse, busy, busy_close
        self.drop_after = drop_after  # audio bytes (over all connections) before one drop
        self.realtime = realtime  # close like the real service when audio comes too fast
        self.connections: list[Connection] = []
        self.refused = 0
        self.dropped = False
        self._lock = threading.Lock()

    @property
    def received(self) -> int:
        return sum(len(c.audio) for c in self.connections)

    def __enter__(self) -> FakeAssemblyAI:
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._gate, logger=_LOG)
        port = self._server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v3/ws"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def _gate(self, connection, request):
        with self._lock:
            if self.refused < self.refuse:
                self.refused += 1
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "down for a moment\n")
        return None

    def _handle(self, ws) -> None:
        request = ws.request
        conn = Connection(request.headers, parse_qs(urlsplit(request.path).query))
        with self._lock:
            self.connections.append(conn)
            busy = self.busy > 0
            self.busy -= busy
        if request.headers.get("Authorization") != self.key:
            return _fail(ws, 1008, "Unauthorized Connection: Invalid API key")
        if busy:
            return _fail(ws, *self.busy_close)
        ws.send(_json(type="Begin", id=str(uuid.uuid4()), expires_at=int(time.time()) + 3 * 3600))
        began = time.monotonic()
        decoder = Decoder(samprate=RATE, loglevel="FATAL")
        turn, turn_start, order = bytearray(), 0, 0  # turn_start: stream sample it began at
        for message in ws:
            if isinstance(message, str):
                kind = json.loads(message).get("type")
                conn.messages.append(kind)
                if kind == "ForceEndpoint":
                    words = _recognize(decoder, bytes(turn), turn_start)
                    ws.send(_turn(order, True, words))
                    order, turn, turn_start = order + 1, bytearray(), len(conn.audio) // 2
                elif kind == "Terminate":
                    seconds = len(conn.audio) / 2 / RATE
                    ws.send(
                        _json(
                            type="Termination",
                            audio_duration_seconds=round(seconds),
                            session_duration_seconds=round(time.monotonic() - began),
                        )
                    )
                    return None
                continue
            conn.chunks.append(len(message))
            ms = len(message) / 2 / RATE * 1000
            if len(message) % 2 or not 50 <= ms <= 1000:
                return _fail(
                    ws,
                    3007,
                    f"Input duration violation: {ms:.0f} ms. Expected between 50 and 1000 ms",
                )
            conn.audio += message
            turn += message
            sent = len(conn.audio) / 2 / RATE
            if self.realtime and sent > time.monotonic() - began + REALTIME_TOLERANCE_SECONDS:
                return _fail(ws, 3007, "Audio Transmission Rate Exceeded")
            if self._should_drop():
                ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the network failed
                return None
            if len(turn) // PARTIAL_EVERY_BYTES > (len(turn) - len(message)) // PARTIAL_EVERY_BYTES:
                at = round(sent * 1000)
                guess = [
                    dict(text=GUESS, start=at - 100, end=at, confidence=0.5, word_is_final=False)
                ]
                ws.send(_turn(order, False, guess))
        return None

    def _should_drop(self) -> bool:
        with self._lock:
            if self.drop_after is None or self.dropped or self.received < self.drop_after:
                return False
            self.dropped = True
            return True


def _recognize(decoder: Decoder, pcm: bytes, start: int) -> list[dict]:
    """PocketSphinx's words for a turn, timed in ms from the stream's start."""
    if not pcm:
        return []
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    base = start / RATE * 1000
    return [
        dict(
            text=_ALT_PRON.sub("", seg.word),
            start=round(base + seg.start_frame * 10),
            end=round(base + (seg.end_frame + 1) * 10),
            confidence=0.9,
            word_is_final=True,
        )
        for seg in decoder.seg()
        if not _FILLER.match(seg.word)
    ]


def _turn(order: int, end: bool, words: list[dict]) -> str:
    final = [w["text"] for w in words if w["word_is_final"]]
    return _json(
        type="Turn",
        turn_order=order,
        turn_is_formatted=False,
        end_of_turn=end,
        transcript=" ".join(final),
        end_of_turn_confidence=1.0 if end else 0.0,
        words=words,
        utterance=" ".join(final) if end else "",
    )


def _fail(ws, code: int, reason: str) -> None:
    """As the service does: an Error message, then the same code as the close code."""
    ws.send(_json(type="Error", error_code=code, error=reason))
    ws.close(code, reason)


def _json(**fields) -> str:
    return json.dumps(fields)
