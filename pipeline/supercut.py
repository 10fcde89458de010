"""A supercut: every place a phrase was said, cut out and joined into one audio file.

The hits come from the archive's search; each is cut around the phrase's own
words (not the whole utterance) with ``before``/``after`` seconds of context
by :meth:`Archive.audio <pipeline.archive.Archive.audio>` (from this machine's
files, object storage, or the recorder that has them), and the clips are
joined in the order they were said with a short silence between them.
Sessions recorded at different rates or channel counts are brought to the
highest of each, so nothing is lost.
The list of clips says where each one starts in the output file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from . import replay, schema
from .database import db_errors
from .errors import ConfigError, QueryError, ReplayError
from .export import csv_text, iso_utc, write_text

if TYPE_CHECKING:
    from .archive import Archive
    from .search import Hit

DEFAULT_PADDING_SECONDS = 0.5
DEFAULT_GAP_SECONDS = 0.5
DEFAULT_LIMIT = 100
LIST_FORMATS = (".json", ".csv")


@dataclass(frozen=True)
class Clip:
    """One hit's piece of the supercut."""

    hit: int  # the utterance id, as `search`, `play` and `clip` show it
    session_id: int
    session: str  # the session's key
    at: datetime  # UTC wall-clock time of the clip's first frame
    start: float  # session seconds cut
    end: float
    text: str  # the utterance the phrase was found in
    offset: float  # seconds into the output file where the clip begins
    seconds: float  # its length in the output file
    score: float | None = None  # with fuzzy: how closely it sounds like the phrase


@dataclass(frozen=True)
class Skipped:
    """A hit left out, and why (its audio was deleted, is unreadable or out of reach)."""

    hit: int
    reason: str


@dataclass(frozen=True)
class Supercut:
    phrase: str
    path: Path
    rate: int
    channels: int
    seconds: float
    clips: tuple[Clip, ...]
    skipped: tuple[Skipped, ...]


def supercut(
    archive: Archive,
    phrase: str,
    out: str | Path,
    *,
    before: float = DEFAULT_PADDING_SECONDS,
    after: float = DEFAULT_PADDING_SECONDS,
    gap: float = DEFAULT_GAP_SECONDS,
    limit: int = DEFAULT_LIMIT,
    listing: str | Path | None = None,
    fuzzy: bool = False,
    min_score: float | None = None,
    **filters,
) -> Supercut:
    """Cut every hit of ``phrase`` (up to ``limit``: the newest, or with ``fuzzy`` the
    best) into ``out``, in the order said; ``listing`` gets the list. ``filters`` are
    :class:`~pipeline.search.Filters` fields."""
    if listing is not None:
        check_listing(listing)
    if gap < 0:
        raise ConfigError(f"--gap must be 0 or more seconds (got {gap:g})")
    found = archive.search(phrase, limit=limit, fuzzy=fuzzy, min_score=min_score, **filters)
    hits = sorted(found, key=lambda h: (h.at, h.id))
    if not hits:
        raise QueryError(f"no match for {phrase!r}; nothing to cut (try `pipeline search`)")
    sessions = _sessions(archive, {h.session_id for h in hits})
    rate = max(s.rate for s in sessions.values())
    channels = max(s.channels for s in sessions.values())
    pieces, clips, skipped = [], [], []
    gap_frames = np.zeros((round(max(0.0, gap) * rate), channels), dtype=np.int16)
    filled = 0
    for hit in hits:
        s = sessions[hit.session_id]
        start = max(0.0, hit.start - max(0.0, before))
        try:
            frames = archive.audio(s, start, hit.end + max(0.0, after))
        except ReplayError as exc:  # deleted, unreadable, or its recorder out of reach
            skipped.append(Skipped(hit.id, str(exc)))
            continue
        frames = _conform(frames, s.rate, rate, channels)
        if pieces:
            pieces.append(gap_frames)
            filled += len(gap_frames)
        clips.append(_clip(hit, s, start, frames, filled / rate, rate))
        pieces.append(frames)
        filled += len(frames)
    if not clips:
        raise ReplayError(f"no hit of {phrase!r} has audio to cut ({skipped[0].reason})")
    path = replay.write_clip(np.concatenate(pieces), rate, Path(out))
    cut = Supercut(phrase, path, rate, channels, filled / rate, tuple(clips), tuple(skipped))
    if listing is not None:
        write_listing(cut, listing)
    return cut


def _sessions(archive: Archive, ids: set[int]) -> dict[int, schema.Session]:
    with db_errors(archive.engine), DbSession(archive.engine) as db:
        rows = db.scalars(
            select(schema.Session)
            .where(schema.Session.id.in_(ids))
            .options(selectinload(schema.Session.segments))
        )
        return {s.id: s for s in rows}


def _conform(frames: np.ndarray, rate: int, to_rate: int, channels: int) -> np.ndarray:
    """Frames at ``to_rate`` with ``channels`` channels (a mono clip is copied to each)."""
    if rate != to_rate and len(frames):
        import soxr

        frames = soxr.resample(np.ascontiguousarray(frames), rate, to_rate)
    if frames.shape[1] != channels:  # after resampling: each copy the same samples
        frames = frames[:, np.arange(channels) % frames.shape[1]]
    return np.ascontiguousarray(frames, dtype=np.int16)


def _clip(
    hit: Hit, s: schema.Session, start: float, frames: np.ndarray, offset: float, rate: int
) -> Clip:
    seconds = len(frames) / rate
    return Clip(
        hit=hit.id,
        session_id=s.id,
        session=s.key,
        at=hit.at - timedelta(seconds=hit.start - start),
        start=start,
        end=start + seconds,
        text=hit.text,
        offset=offset,
        seconds=seconds,
        score=hit.score,
    )


def check_listing(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in LIST_FORMATS:
        raise ConfigError(f"--list {path}: end it in .json or .csv")
    return path


def listing_rows(cut: Supercut) -> list[dict]:
    """The clips as flat rows: times rounded to the millisecond, ``at`` in UTC ISO 8601."""
    rows = []
    for c in cut.clips:
        row = asdict(c)
        row["at"] = iso_utc(c.at)
        for key in ("start", "end", "offset", "seconds"):
            row[key] = round(row[key], 3)
        rows.append(row)
    return rows


def write_listing(cut: Supercut, path: str | Path) -> Path:
    """The list of clips as JSON (with the phrase and file) or CSV (one row per clip)."""
    path = check_listing(path)
    if path.suffix.lower() == ".csv":
        return write_text(path, csv_text(listing_rows(cut)))
    doc = {
        "phrase": cut.phrase,
        "file": str(cut.path),
        "rate": cut.rate,
        "channels": cut.channels,
        "seconds": round(cut.seconds, 3),
        "clips": listing_rows(cut),
        "skipped": [asdict(s) for s in cut.skipped],
    }
    return write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
