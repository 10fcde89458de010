"""Finding spoken phrases: user text → a safe FTS5 phrase → hits with times.

User text is never handed to FTS5 as syntax. It is split into the same
tokens FTS5's ``unicode61`` tokenizer makes (letters and digits; everything
else separates), and those tokens become one quoted phrase. So quotes,
``AND OR NOT``, ``NEAR(``, ``budg*`` and emoji are searched literally or, if
nothing searchable is left, rejected with a one-line message.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, select, text
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from . import schema
from .database import db_errors
from .errors import QueryError

MAX_QUERY_WORDS = 64
_TOKEN = re.compile(r"[^\W_]+")


def tokens(text_: str) -> list[str]:
    """Case- and accent-folded word tokens, as FTS5's unicode61 tokenizer sees them."""
    folded = unicodedata.normalize("NFKD", text_.casefold())
    stripped = "".join(ch for ch in folded if not unicodedata.combining(ch))
    # composed again: NFKD splits Hangul syllables into jamo, which FTS5 keeps whole
    return _TOKEN.findall(unicodedata.normalize("NFC", stripped))


def phrase_query(query: str) -> str:
    """The FTS5 MATCH string for an exact phrase; QueryError if nothing is searchable."""
    words = tokens(query)
    if not words:
        raise QueryError(f"nothing to search for in {query[:40]!r}; type some words")
    if len(words) > MAX_QUERY_WORDS:
        raise QueryError(
            f"the query has {len(words)} words; search for a phrase of at most {MAX_QUERY_WORDS}"
        )
    return '"' + " ".join(words) + '"'


@dataclass(frozen=True)
class Hit:
    """One utterance that contains the phrase, and where the phrase is in it."""

    id: int  # the utterance id: what `play ID` and `clip ID` take
    session_id: int
    session_key: str
    source: str
    words: tuple[str, ...]
    match: tuple[int, int]  # word index range [first, last) of the phrase
    start: float  # session seconds where the phrase starts
    end: float
    utterance_start: float
    utterance_end: float
    at: datetime  # UTC wall-clock time where the phrase starts
    segment: str | None  # the segment file holding the phrase start (relative path)
    segment_offset: float | None  # seconds into that segment
    engine: str  # the engine and model that heard it

    @property
    def text(self) -> str:
        return " ".join(self.words)


def search(engine: Engine, query: str, *, limit: int = 20, model: str | None = None) -> list[Hit]:
    """Utterances containing the phrase, newest first.

    Each session is searched in its default transcript (the newest complete
    one); ``model`` searches each session's newest transcript by that model
    instead (a name from `pipeline models list`, an engine label such as
    ``vosk:vosk-model-small-en-us-0.15``, or an engine such as ``vosk``).
    """
    if limit < 1:
        raise QueryError("--limit must be at least 1")
    match = phrase_query(query)
    wanted = tokens(query)
    with db_errors(engine), DbSession(engine) as db:
        if model is None:
            which = (
                "u.transcript_id = "
                "(SELECT s.transcript_id FROM sessions AS s WHERE s.id = u.session_id)"
            )
            params: dict = {}
        else:
            labels = transcript_engines(db, model)
            which = (
                "u.transcript_id IN (SELECT max(t.id) FROM transcripts AS t "
                "WHERE t.engine IN :labels GROUP BY t.session_id)"
            )
            params = {"labels": labels}
        sql = text(
            "SELECT u.id FROM utterances_fts JOIN utterances AS u ON u.id = utterances_fts.rowid "
            f"WHERE utterances_fts MATCH :match AND {which} "
            "ORDER BY u.at DESC, u.id DESC LIMIT :limit"
        )
        if model is not None:
            sql = sql.bindparams(bindparam("labels", expanding=True))
        ids = list(db.scalars(sql, {"match": match, "limit": limit, **params}))
        rows = db.scalars(
            select(schema.Utterance)
            .where(schema.Utterance.id.in_(ids))
            .options(
                selectinload(schema.Utterance.words),
                selectinload(schema.Utterance.session).selectinload(schema.Session.segments),
            )
        ).all()
        by_id = {u.id: u for u in rows}
        return [_hit(by_id[i], wanted) for i in ids if i in by_id]


def transcript_engines(db: DbSession, model: str) -> list[str]:
    """The engine labels of the archive's transcripts that ``model`` names; QueryError if none."""
    known = list(db.scalars(select(schema.Transcript.engine).distinct()))
    labels = [e for e in known if model in _names(e)]
    if not labels:
        have = ", ".join(sorted(known)) or "none yet"
        raise QueryError(f"no transcripts by model {model!r} in the archive (it has: {have})")
    return labels


def _names(label: str) -> set[str]:
    """What a user may call an engine label: "vosk:x" is also "x" and "vosk"."""
    kind, _, name = label.partition(":")
    return {label, kind, name, label.replace(":", "-")}


def _hit(utt: schema.Utterance, wanted: list[str]) -> Hit:
    first, last = locate(utt.words, wanted)
    words = utt.words
    start = words[first].start if words else utt.start
    end = words[last - 1].end if words else utt.end
    session = utt.session
    segment, seg_offset = _segment_at(session, start)
    return Hit(
        id=utt.id,
        session_id=session.id,
        session_key=session.key,
        source=session.source,
        words=tuple(w.text for w in words),
        match=(first, last),
        start=start,
        end=end,
        utterance_start=utt.start,
        utterance_end=utt.end,
        at=session.started_at + timedelta(seconds=start),
        segment=segment,
        segment_offset=seg_offset,
        engine=utt.engine,
    )


def locate(words: list[schema.Word], wanted: list[str]) -> tuple[int, int]:
    """The word range whose tokens spell ``wanted``; the whole utterance if not found."""
    flat: list[tuple[str, int]] = [(t, i) for i, w in enumerate(words) for t in tokens(w.text)]
    n = len(wanted)
    for k in range(len(flat) - n + 1):
        if [t for t, _ in flat[k : k + n]] == wanted:
            return flat[k][1], flat[k + n - 1][1] + 1
    return 0, len(words)


def _segment_at(session: schema.Session, seconds: float) -> tuple[str | None, float | None]:
    frame = round(seconds * session.rate)
    for seg in session.segments:
        if seg.offset <= frame < seg.offset + seg.frames and seg.deleted_at is None:
            return seg.path, (frame - seg.offset) / seg.rate
    return None, None
