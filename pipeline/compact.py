"""Compaction: finished segments older than an age are re-encoded to save disk.

Capture writes 16-bit WAV, the format a crash leaves readable; a day of
48 kHz stereo is 16.6 GB of it. Once a segment is old enough it is
re-encoded to FLAC (lossless, about half) or Opus (speech quality, a day in
well under a gigabyte; see ``bench/compact.py``). Opus has no 44.1 kHz, so a
44.1 kHz segment becomes 48 kHz Opus; its row still counts frames at the
session's rate and :mod:`pipeline.segment_file` reads it back at that rate.

The new file is written under a temporary name, fsynced and renamed; the
archive is then pointed at it (by the indexer, the archive's one writer,
through :class:`~pipeline.messages.SegmentCompacted`) and only after that
commit is the old file deleted. A crash at any step leaves one good copy
that the archive points at; ``pipeline repair`` removes the other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from . import schema
from .config import Home
from .database import db_errors
from .messages import SegmentCompacted

log = logging.getLogger(__name__)

COMPACTING_SUFFIX = ".compacting"
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_QUALITY = 0.9  # libsndfile compression level 0-1: ~64 kbit/s for 48 kHz stereo


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    container: str
    subtype: str
    compression: float | None = None


FORMATS = {
    "flac": Format("flac", ".flac", "FLAC", "PCM_16"),
    "opus": Format("opus", ".opus", "OGG", "OPUS", OPUS_QUALITY),
}


def due(home: Home, engine, older_than: timedelta, fmt: Format, now: datetime | None = None):
    """Segments to compact: (session key, path), written before ``now - older_than``, oldest first.

    Only WAV segments with their audio still on disk; a FLAC segment is not
    made Opus (say so with ``--format``: that is a choice, not a default).
    """
    cutoff = ((now or datetime.now(UTC)) - older_than).timestamp()
    with db_errors(engine), DbSession(engine) as db:
        rows = db.execute(
            select(schema.Session.key, schema.Segment.path)
            .join(schema.Segment.session)
            .where(schema.Segment.deleted_at.is_(None), schema.Segment.path.like("%.wav"))
            .order_by(schema.Segment.started_at)
        ).all()
    return [(key, path) for key, path in rows if _written_before(home.recordings / path, cutoff)]


def _written_before(path: Path, cutoff: float) -> bool:
    """Finished long enough ago (by the file's time: an ingested old file is new audio here)."""
    try:
        return path.stat().st_mtime <= cutoff
    except FileNotFoundError:
        return False


def encode(source: Path, fmt: Format) -> Path:
    """Write ``source`` in ``fmt`` beside it, durably; returns the new file (the old one stays)."""
    final = source.with_suffix(fmt.suffix)
    tmp = final.with_name(final.name + COMPACTING_SUFFIX)
    data, rate = sf.read(source, dtype="int16", always_2d=True)
    if fmt.name == "opus" and rate not in OPUS_RATES:
        import soxr

        data = soxr.resample(data.astype(np.float32) / 32768.0, rate, 48000)
        rate = 48000
    kwargs = {} if fmt.compression is None else {"compression_level": fmt.compression}
    try:
        with sf.SoundFile(
            tmp, "w", rate, data.shape[1], fmt.subtype, format=fmt.container, **kwargs
        ) as f:
            f.write(data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def compact(
    home: Home,
    engine,
    fmt: Format,
    older_than: timedelta,
    send: Callable[[SegmentCompacted], None],
    *,
    keep_going: Callable[[], bool] = lambda: True,
) -> list[SegmentCompacted]:
    """Re-encode every due segment, one at a time; ``send`` tells the indexer of each."""
    done = []
    for key, path in due(home, engine, older_than, fmt):
        if not keep_going():
            break
        old = home.recordings / path
        try:
            new = encode(old, fmt)
        except (sf.LibsndfileError, OSError, RuntimeError) as exc:
            log.warning("cannot compact %s (%s); it stays as it is", path, exc)
            continue
        msg = SegmentCompacted(
            key,
            path,
            str(new.relative_to(home.recordings)),
            old.stat().st_size,
            new.stat().st_size,
        )
        log.info(
            "compacted %s to %s: %.1f MB → %.1f MB",
            path,
            fmt.name,
            msg.bytes_before / 1e6,
            msg.bytes_after / 1e6,
        )
        send(msg)
        done.append(msg)
    return done


def compact_archive(
    home: Home,
    fmt: Format,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    on_done: Callable[[SegmentCompacted], None] | None = None,
) -> list[SegmentCompacted]:
    """`pipeline compact`: compact the home now, holding its lock (no recorder may run).

    A dry run lists what is due (with its size now) and changes nothing.
    """
    from .database import open_archive
    from .index import Indexer
    from .lock import hold

    with hold(home):
        engine = open_archive(home)
        try:
            if dry_run:
                done = []
                for key, path in due(home, engine, older_than, fmt):
                    size = (home.recordings / path).stat().st_size
                    done.append(SegmentCompacted(key, path, path, size, size))
                    (on_done or (lambda m: None))(done[-1])
                return done
            indexer = Indexer(engine, recordings=home.recordings)

            def send(msg: SegmentCompacted) -> None:
                indexer.write([msg])
                if on_done:
                    on_done(msg)

            return compact(home, engine, fmt, older_than, send)
        finally:
            engine.dispose()
