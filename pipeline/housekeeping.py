"""Housekeeping during a run: compaction, uploads to object storage and the disk budget,
off the supervisor's loop.

They read the archive and touch files but never write the database: what
they did goes to the indexer as messages (``SegmentCompacted``,
``SegmentUploaded``, ``AudioDeleted``), so the indexer stays the archive's one
writer. Compaction encodes minutes of audio at a time and uploads take what
the network gives, so they run on their own thread and the supervisor keeps
watching its children meanwhile. The order of a round matters: compaction
first (the upload is of the file that stays), the budget last (a segment
deleted here then still has its copy).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from .compact import Format, compact
from .config import Home
from .database import open_database
from .errors import ArchiveUnreachableError
from .objectstore import Bucket, ObjectStore, upload
from .retention import CHECK_EVERY_SECONDS, enforce

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upkeep:
    """What housekeeping a run does: a disk budget (bytes), compaction (format, age),
    uploads of finished segments to a bucket."""

    max_disk: int | None = None
    compact: Format | None = None
    compact_after: timedelta = timedelta(hours=1)
    upload: Bucket | None = None

    def __bool__(self) -> bool:
        return self.max_disk is not None or self.compact is not None or self.upload is not None


class Housekeeper(threading.Thread):
    """Every CHECK_EVERY_SECONDS: compact what is due, then keep to the disk budget."""

    def __init__(self, home: Home, upkeep: Upkeep, send: Callable[[object], None]) -> None:
        super().__init__(name="housekeeping", daemon=True)
        self.home = home
        self.upkeep = upkeep
        self.send = send
        self.stopping = threading.Event()
        self.store = ObjectStore(upkeep.upload.endpoint_url) if upkeep.upload else None

    def run(self) -> None:
        engine = open_database(self.home)
        try:
            while not self.stopping.is_set():
                try:
                    self.once(engine)
                except ArchiveUnreachableError as exc:  # a shared archive away: next round
                    log.info("housekeeping waits for the archive: %s", exc)
                self.stopping.wait(CHECK_EVERY_SECONDS)
        except Exception:  # never take the run down: the next run tries again
            log.exception("housekeeping failed; recording goes on")
        finally:
            engine.dispose()

    def once(self, engine) -> None:
        u = self.upkeep
        keep_going = lambda: not self.stopping.is_set()  # noqa: E731
        compacted = []
        if u.compact is not None:
            compacted = compact(
                self.home, engine, u.compact, u.compact_after, self.send, keep_going=keep_going
            )
        uploaded = []
        if u.upload is not None:
            uploaded = upload(
                self.home,
                engine,
                u.upload,
                self.store,
                self.send,
                compacting_after=u.compact_after if u.compact is not None else None,
                skip=frozenset(m.old_path for m in compacted),
                keep_going=keep_going,
            )
        if u.max_disk is not None:
            copied = frozenset(m.path for m in uploaded)
            enforce(self.home, engine, u.max_disk, self.send, copied)

    def stop(self) -> None:
        self.stopping.set()
        self.join()
