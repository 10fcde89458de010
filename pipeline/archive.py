"""The archive: one data home's database and recordings, read side.

``Archive(home)`` is what the CLI, the Python API (``from pipeline import
Archive``) and the web page call to search, list sessions and fetch moments;
the write side is the indexer process. A moment's audio is read from this
machine's disk when it is here, else from its copy in object storage, else
asked of the recorder that has it (see :mod:`pipeline.remote`, :mod:`pipeline.objectstore`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from . import remote, replay, schema
from . import supercut as cutting
from .config import Home, resolve_home
from .database import db_errors, migrate, open_database
from .dates import between
from .errors import NotFoundError, QueryError
from .export import SessionText, check_format, load, render
from .objectstore import ObjectStore, SegmentCache
from .search import Hit, search

When = datetime | str | None  # a time, or as the CLI takes it: "yesterday", "2h", "monday"


@dataclass(frozen=True)
class SessionInfo:
    """A row of `pipeline sessions`."""

    id: int
    key: str
    source_kind: str
    source: str
    started_at: datetime
    seconds: float
    rate: int
    channels: int
    segments: int
    utterances: int
    words: int
    status: str
    recorder: str  # the machine that recorded it, whose disk has its audio


@dataclass(frozen=True)
class Moment:
    """A stretch of one session's audio, ready to be written or played."""

    frames: np.ndarray
    rate: int
    session_id: int
    start: float
    end: float


@dataclass(frozen=True)
class Said:
    """One utterance as `pipeline show` prints it: times, engine, words with confidence."""

    id: int
    session_id: int
    start: float
    end: float
    at: datetime
    engine: str
    words: tuple[tuple[str, float, float, float], ...]  # text, start, end, confidence

    @property
    def text(self) -> str:
        return " ".join(w[0] for w in self.words)

    def as_json(self) -> dict:
        """As `pipeline show --json` prints it and the web page reads it (times local)."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "at": self.at.astimezone().isoformat(timespec="milliseconds"),
            "start": self.start,
            "end": self.end,
            "engine": self.engine,
            "text": self.text,
            "words": [
                {"text": t, "start": a, "end": b, "confidence": round(c, 3)}
                for t, a, b, c in self.words
            ],
        }


def _said(utt: schema.Utterance) -> Said:
    words = tuple((w.text, w.start, w.end, w.confidence) for w in utt.words)
    return Said(utt.id, utt.session_id, utt.start, utt.end, utt.at, utt.engine, words)


CONTEXT_REACH_SECONDS = 120.0  # how far `--context` looks for words around a hit


class Archive:
    """Read access to a data home: search, sessions, moments.

    ``elsewhere``: how to get audio that is not on this machine's disk (the token of
    the other recorders' `pipeline serve`, the object store's endpoint); by default
    the token in ``$PIPELINE_TOKEN``, if any.
    """

    def __init__(
        self, home: Home | str | Path | None = None, *, elsewhere: remote.Elsewhere | None = None
    ) -> None:
        self.home = home if isinstance(home, Home) else resolve_home(home)
        self.engine = open_database(self.home, readonly=True)
        migrate(self.engine)
        self.elsewhere = elsewhere if elsewhere is not None else remote.Elsewhere.resolve()
        self._cache: SegmentCache | None = None

    def search(
        self,
        query: str,
        *,
        limit: int = 20,
        fts: bool = False,
        rank: bool = False,
        fuzzy: bool = False,
        min_score: float | None = None,
        **filters,
    ) -> list[Hit]:
        """Hits for a phrase (or, with ``fts``, an FTS5 query; with ``fuzzy``, what sounds
        like it, scoring at least ``min_score``); ``filters`` are the fields of
        :class:`~pipeline.search.Filters` (since, until, session, source, device, model),
        since and until as datetimes or as the CLI takes them ("yesterday", "2h")."""
        filters["since"], filters["until"] = _times(filters.get("since"), filters.get("until"))
        return search(
            self.engine,
            query,
            limit=limit,
            fts=fts,
            rank=rank,
            fuzzy=fuzzy,
            min_score=min_score,
            **filters,
        )

    def closest(self, query: str, **filters) -> Hit | None:
        """What sounds most like the phrase, whatever its score (None: nothing does):
        where to look when ``search(query, fuzzy=True)`` finds nothing above its
        cut-off, as a phrase the recognizer heard badly often scores just under it."""
        found = self.search(query, fuzzy=True, min_score=0.0, limit=1, **filters)
        return found[0] if found and found[0].score else None

    def context(self, hit: Hit, words: int) -> tuple[list[str], list[str]]:
        """Up to ``words`` words said just before and just after a hit's match, across
        utterances, in the same transcript."""
        u, w = schema.Utterance, schema.Word
        transcript = select(u.transcript_id).where(u.id == hit.id).scalar_subquery()
        near = select(w.text).join(u).where(u.transcript_id == transcript)
        with db_errors(self.engine), DbSession(self.engine) as db:
            before = db.scalars(
                near.where(w.start < hit.start, u.start > hit.start - CONTEXT_REACH_SECONDS)
                .order_by(w.start.desc())
                .limit(words)
            ).all()
            after = db.scalars(
                near.where(w.start >= hit.end - 0.01, u.start < hit.end + CONTEXT_REACH_SECONDS)
                .order_by(w.start)
                .limit(words)
            ).all()
        return list(reversed(before)), list(after)

    def around(self, utterance_id: int, neighbours: int = 2) -> tuple[list[Said], int]:
        """An utterance with ``neighbours`` before and after it in its transcript, with
        their words; and the index of the asked one in that list."""
        u = schema.Utterance
        with db_errors(self.engine), DbSession(self.engine) as db:
            utt = db.get(u, utterance_id)
            if utt is None:
                raise NotFoundError(f"no hit with id {utterance_id}; run `pipeline search` for ids")
            same = select(u).where(
                u.transcript_id == utt.transcript_id, u.session_id == utt.session_id
            )
            before = db.scalars(
                same.where((u.start < utt.start) | ((u.start == utt.start) & (u.id < utt.id)))
                .order_by(u.start.desc(), u.id.desc())
                .limit(neighbours)
                .options(selectinload(u.words))
            ).all()
            after = db.scalars(
                same.where((u.start > utt.start) | ((u.start == utt.start) & (u.id > utt.id)))
                .order_by(u.start, u.id)
                .limit(neighbours)
                .options(selectinload(u.words))
            ).all()
            rows = [*reversed(before), utt, *after]
            return [_said(r) for r in rows], len(before)

    def sessions(self) -> list[SessionInfo]:
        utt_counts = (
            select(schema.Utterance.session_id, func.count().label("n"))
            .where(schema.in_current_transcript())
            .group_by(schema.Utterance.session_id)
            .subquery()
        )
        word_counts = (
            select(schema.Utterance.session_id, func.count(schema.Word.id).label("n"))
            .join(schema.Word)
            .where(schema.in_current_transcript())
            .group_by(schema.Utterance.session_id)
            .subquery()
        )
        seg_counts = (
            select(schema.Segment.session_id, func.count().label("n"))
            .group_by(schema.Segment.session_id)
            .subquery()
        )
        stmt = (
            select(
                schema.Session,
                func.coalesce(seg_counts.c.n, 0),
                func.coalesce(utt_counts.c.n, 0),
                func.coalesce(word_counts.c.n, 0),
            )
            .outerjoin(seg_counts, seg_counts.c.session_id == schema.Session.id)
            .outerjoin(utt_counts, utt_counts.c.session_id == schema.Session.id)
            .outerjoin(word_counts, word_counts.c.session_id == schema.Session.id)
            .order_by(schema.Session.started_at.desc())
        )
        with db_errors(self.engine), DbSession(self.engine) as db:
            return [
                SessionInfo(
                    s.id,
                    s.key,
                    s.source_kind,
                    s.source,
                    s.started_at,
                    s.seconds,
                    s.rate,
                    s.channels,
                    segs,
                    utts,
                    words,
                    s.status,
                    s.recorder,
                )
                for s, segs, utts, words in db.execute(stmt)
            ]

    def moment(
        self,
        hit_id: int | Hit,
        *,
        before: float = replay.DEFAULT_PADDING_SECONDS,
        after: float = replay.DEFAULT_PADDING_SECONDS,
    ) -> Moment:
        """The audio of utterance ``hit_id`` (or a Hit's) with ``before``/``after`` seconds."""
        hit_id = hit_id.id if isinstance(hit_id, Hit) else hit_id
        with db_errors(self.engine), DbSession(self.engine) as db:
            utt = db.scalar(
                select(schema.Utterance)
                .where(schema.Utterance.id == hit_id)
                .options(
                    selectinload(schema.Utterance.session).selectinload(schema.Session.segments)
                )
            )
            if utt is None:
                raise NotFoundError(f"no hit with id {hit_id}; run `pipeline search` for ids")
            session = utt.session
        start = max(0.0, utt.start - max(0.0, before))
        frames = self.audio(session, start, utt.end + max(0.0, after))
        return Moment(frames, session.rate, session.id, start, start + len(frames) / session.rate)

    def audio(self, session: schema.Session, start: float, end: float) -> np.ndarray:
        """Seconds [start, end) of a session (loaded with its segments), wherever they are:
        this machine's files, their copies in object storage, or the recorder that has them."""
        if self._here(session, start, end):
            return self.audio_here(session, start, end)
        return remote.fetch_span(self.engine, session, start, end, self.elsewhere.bearer())

    def audio_here(self, session: schema.Session, start: float, end: float) -> np.ndarray:
        """Seconds [start, end) of a session from this machine's files or object storage;
        never from another recorder (what this machine's `serve` answers with)."""
        return replay.read_span(self.home.recordings, session, start, end, self._fetch)

    def session(self, key: str) -> schema.Session:
        """A session by its key, with its segments (detached: readable after)."""
        with db_errors(self.engine), DbSession(self.engine) as db:
            found = db.scalar(
                select(schema.Session)
                .where(schema.Session.key == key)
                .options(selectinload(schema.Session.segments))
            )
        if found is None:
            raise NotFoundError(f"no session {key!r} in the archive; see `pipeline sessions`")
        return found

    def _here(self, session: schema.Session, start: float, end: float) -> bool:
        """Whether this machine can read the stretch itself: it recorded the session, or
        each segment needed is on its disk, in object storage, or known to be deleted."""
        if not self.home.shared or session.recorder == self.home.recorder_name:
            return True
        return all(
            seg.remote is not None
            or seg.deleted_at is not None
            or (self.home.recordings / seg.path).exists()
            for seg in replay.overlapping(session, start, end)
        )

    def _fetch(self, url: str) -> Path:
        if self._cache is None:
            self._cache = SegmentCache(self.home, ObjectStore(self.elsewhere.s3_endpoint_url))
        return self._cache.path_of(url)

    def clip(self, hit_id: int | Hit, out: str | Path, **padding: float) -> Path:
        m = self.moment(hit_id, **padding)
        return replay.write_clip(m.frames, m.rate, Path(out))

    def play(self, hit_id: int | Hit, **padding: float) -> Moment:
        m = self.moment(hit_id, **padding)
        replay.play(m.frames, m.rate)
        return m

    def transcripts(
        self,
        session: int | str | None = None,
        *,
        since: When = None,
        until: When = None,
        model: str | None = None,
    ) -> list[SessionText]:
        """A session's transcript (by id or key), or every session's words in [since, until)
        (datetimes, or text as the CLI takes it: "yesterday", "2h", "2026-11-01")."""
        since, until = _times(since, until)
        return load(self.engine, session=session, since=since, until=until, model=model)

    def export(
        self,
        session: int | str | None = None,
        format: str = "txt",
        *,
        since: When = None,
        until: When = None,
        model: str | None = None,
    ) -> str:
        """The transcript as txt, srt, vtt or json text (see :mod:`pipeline.export`)."""
        check_format(format)
        found = self.transcripts(session, since=since, until=until, model=model)
        return render(found, format)

    def supercut(
        self,
        phrase: str,
        out: str | Path,
        *,
        before: float = cutting.DEFAULT_PADDING_SECONDS,
        after: float = cutting.DEFAULT_PADDING_SECONDS,
        gap: float = cutting.DEFAULT_GAP_SECONDS,
        limit: int = cutting.DEFAULT_LIMIT,
        listing: str | Path | None = None,
        fuzzy: bool = False,
        min_score: float | None = None,
        **filters,
    ) -> cutting.Supercut:
        """Every hit of ``phrase`` cut and joined into ``out``; ``listing`` (.json, .csv)
        gets the list of clips (see :mod:`pipeline.supercut`). ``fuzzy``, ``min_score``
        and ``filters`` (``model``, ``since``, ``session``...) choose the hits as
        :meth:`search` does."""
        return cutting.supercut(
            self,
            phrase,
            out,
            before=before,
            after=after,
            gap=gap,
            limit=limit,
            listing=listing,
            fuzzy=fuzzy,
            min_score=min_score,
            **filters,
        )


def _times(since: When, until: When) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` as times; QueryError if text is not one, or they are the
    wrong way round."""
    try:
        return between(since, until, names=("since", "until"))
    except ValueError as exc:
        raise QueryError(str(exc)) from None
