"""Taking the words out: a session's transcript as text, subtitles or JSON.

:func:`load` reads what to export from the database into small frozen
records (:class:`SessionText`, :class:`Line`, :class:`WordTime`); everything
else here is a pure function from those records to text, so each format can
be checked without a database and the CLI only parses options and writes.

Only each session's default transcript is exported (the one search shows),
or with ``model`` each session's newest transcript by that model, as
``search --model`` does.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from . import schema
from .database import db_errors
from .errors import ConfigError, ExportError, QueryError
from .search import transcript_engines

FORMATS = ("txt", "srt", "vtt", "json")

# Subtitle cues follow the common broadcast guideline: at most two lines of
# 42 characters, on screen at most 7 seconds; a longer utterance is split
# between words, at the words' own times.
CUE_LINE_CHARS = 42
CUE_LINES = 2
CUE_SECONDS = 7.0


@dataclass(frozen=True)
class WordTime:
    text: str
    start: float  # session seconds
    end: float
    confidence: float


@dataclass(frozen=True)
class Line:
    """One utterance of a transcript."""

    id: int
    start: float  # session seconds
    end: float
    at: datetime  # UTC wall-clock time of ``start``
    text: str
    engine: str
    words: tuple[WordTime, ...]


@dataclass(frozen=True)
class SessionText:
    """A session and the lines of the transcript chosen for it, in time order."""

    id: int
    key: str
    source_kind: str
    source: str
    started_at: datetime  # UTC
    seconds: float
    rate: int
    channels: int
    transcript: str | None  # the engine label of the transcript, None if it has none
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Cue:
    """One subtitle: times in seconds from the export's origin, text already in lines."""

    start: float
    end: float
    lines: tuple[str, ...]


# --- reading ------------------------------------------------------------------------


def load(
    engine: Engine,
    *,
    session: int | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
) -> list[SessionText]:
    """The sessions to export, oldest first, each with its lines in [since, until).

    ``session`` (an id or key) picks one session, kept even if it has no words;
    without it, the sessions with words between ``since`` and ``until``.
    """
    if session is None and since is None and until is None:
        raise ConfigError("say what to export: a SESSION (id or key), or --since/--until")
    with db_errors(engine), DbSession(engine) as db:
        which = _which_transcripts(db, model)
        stmt = (
            select(schema.Utterance)
            .join(schema.Utterance.session)
            .where(which)
            .options(selectinload(schema.Utterance.words), selectinload(schema.Utterance.session))
            .order_by(schema.Session.started_at, schema.Session.id, schema.Utterance.start)
        )
        one = None
        if session is not None:
            one = schema.find_session(db, session)
            stmt = stmt.where(schema.Utterance.session_id == one.id)
        if since is not None:
            stmt = stmt.where(schema.Utterance.at >= since)
        if until is not None:
            stmt = stmt.where(schema.Utterance.at < until)
        utterances = list(db.scalars(stmt))
        sessions = {one.id: one} if one is not None else {}
        grouped: dict[int, list[schema.Utterance]] = {}
        for u in utterances:
            sessions.setdefault(u.session_id, u.session)
            grouped.setdefault(u.session_id, []).append(u)
        labels = _labels(db, {u.transcript_id for u in utterances})
        texts = []
        for s in sessions.values():
            mine = grouped.get(s.id, [])
            label = labels.get(mine[0].transcript_id) if mine else _empty_label(db, s, model)
            texts.append(_session_text(s, label, mine))
        return texts


def _which_transcripts(db: DbSession, model: str | None):
    """Where-clause picking each session's default transcript, or its newest by ``model``."""
    if model is None:
        return schema.in_current_transcript()
    labels = transcript_engines(db, model)
    newest = (
        select(func.max(schema.Transcript.id))
        .where(schema.Transcript.engine.in_(labels))
        .group_by(schema.Transcript.session_id)
    )
    return schema.Utterance.transcript_id.in_(newest)


def _labels(db: DbSession, ids: set[int | None]) -> dict[int | None, str]:
    rows = db.execute(
        select(schema.Transcript.id, schema.Transcript.engine).where(schema.Transcript.id.in_(ids))
    )
    return {id_: label for id_, label in rows}


def _empty_label(db: DbSession, s: schema.Session, model: str | None) -> str | None:
    """The transcript a session without words would show; QueryError if ``model`` has none."""
    if model is None:
        return db.scalar(
            select(schema.Transcript.engine).where(schema.Transcript.id == s.transcript_id)
        )
    labels = transcript_engines(db, model)
    label = db.scalar(
        select(schema.Transcript.engine)
        .where(schema.Transcript.session_id == s.id, schema.Transcript.engine.in_(labels))
        .order_by(schema.Transcript.id.desc())
        .limit(1)
    )
    if label is None:
        raise QueryError(
            f"session {s.id} has no transcript by model {model!r}; "
            f"`pipeline reindex --model {model} --session {s.id}` makes one"
        )
    return label


def _session_text(s: schema.Session, label: str | None, utts: list) -> SessionText:
    return SessionText(
        id=s.id,
        key=s.key,
        source_kind=s.source_kind,
        source=s.source,
        started_at=s.started_at,
        seconds=s.seconds,
        rate=s.rate,
        channels=s.channels,
        transcript=label,
        lines=tuple(
            Line(
                id=u.id,
                start=u.start,
                end=u.end,
                at=u.at,
                text=u.text,
                engine=u.engine,
                words=tuple(WordTime(w.text, w.start, w.end, w.confidence) for w in u.words),
            )
            for u in utts
        ),
    )


# --- formats ------------------------------------------------------------------------


def render(sessions: list[SessionText], fmt: str) -> str:
    """The sessions in one of :data:`FORMATS`."""
    check_format(fmt)
    return {"txt": to_txt, "srt": to_srt, "vtt": to_vtt, "json": to_json}[fmt](sessions)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    return fmt


def to_txt(sessions: list[SessionText]) -> str:
    """A header line per session, then one line per utterance with its session time."""
    out = []
    for s in sessions:
        out.append(
            f"# session {s.id} {s.key}: {s.source}, started {iso_utc(s.started_at)}, "
            f"transcript {s.transcript or 'none'}"
        )
        out.extend(f"[{clock(round(line.start, 1), '.')[:-2]}] {line.text}" for line in s.lines)
    return "".join(f"{line}\n" for line in out)


def to_srt(sessions: list[SessionText]) -> str:
    return "".join(
        f"{i}\n{clock(c.start, ',')} --> {clock(c.end, ',')}\n" + "\n".join(c.lines) + "\n\n"
        for i, c in enumerate(cues(sessions), 1)
    )


def to_vtt(sessions: list[SessionText]) -> str:
    body = "".join(
        f"{clock(c.start, '.')} --> {clock(c.end, '.')}\n"
        + "\n".join(_vtt_escape(t) for t in c.lines)
        + "\n\n"
        for c in cues(sessions)
    )
    return "WEBVTT\n\n" + body


def to_json(sessions: list[SessionText]) -> str:
    doc = {
        "sessions": [
            {
                "id": s.id,
                "key": s.key,
                "source_kind": s.source_kind,
                "source": s.source,
                "started_at": iso_utc(s.started_at),
                "seconds": round(s.seconds, 3),
                "rate": s.rate,
                "channels": s.channels,
                "transcript": s.transcript,
                "utterances": [
                    {
                        "id": line.id,
                        "at": iso_utc(line.at),
                        "start": round(line.start, 3),
                        "end": round(line.end, 3),
                        "text": line.text,
                        "engine": line.engine,
                        "words": [
                            {
                                "text": w.text,
                                "start": round(w.start, 3),
                                "end": round(w.end, 3),
                                "confidence": round(w.confidence, 4),
                            }
                            for w in line.words
                        ],
                    }
                    for line in s.lines
                ],
            }
            for s in sessions
        ]
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def cues(sessions: list[SessionText]) -> list[Cue]:
    """Subtitle cues of every line, in time order.

    Times count from the first session's start: for one session they are
    session times; over several, cues follow the wall clock from there.
    """
    if not sessions:
        return []
    origin = min(s.started_at for s in sessions)
    out = []
    for s in sessions:
        shift = (s.started_at - origin).total_seconds()
        for line in s.lines:
            out.extend(Cue(c.start + shift, c.end + shift, c.lines) for c in line_cues(line))
    return sorted(out, key=lambda c: c.start)


def line_cues(line: Line) -> list[Cue]:
    """One cue per utterance, or several if it is too long to read in one (split between words)."""
    if not line.words:
        return [Cue(line.start, line.end, _wrap(line.text.split()))]
    groups: list[list[WordTime]] = [[]]
    for w in line.words:
        group = groups[-1]
        if group and (
            len(_wrap([x.text for x in [*group, w]])) > CUE_LINES
            or w.end - group[0].start > CUE_SECONDS
        ):
            groups.append([w])
        else:
            group.append(w)
    return [Cue(g[0].start, max(g[-1].end, g[0].start), _wrap([w.text for w in g])) for g in groups]


def _wrap(words: list[str]) -> tuple[str, ...]:
    """Words into lines of at most CUE_LINE_CHARS (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= CUE_LINE_CHARS:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return tuple(lines)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clock(seconds: float, sep: str) -> str:
    """HH:MM:SS<sep>mmm, as SRT (sep ",") and WebVTT (sep ".") write times."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def iso_utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- writing ------------------------------------------------------------------------


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``; ExportError, one line, if it cannot be written there."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name such as {path}/transcript.txt")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ExportError(
            f"cannot write {path} ({reason}); check the folder exists and is writable"
        ) from exc
    return path


def csv_text(rows: list[dict]) -> str:
    """Rows of one shape as CSV with a header line."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
