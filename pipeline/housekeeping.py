"""Housekeeping during a run: the disk budget and compaction, off the supervisor's loop.

Both read the archive and touch files but never write the database: what
they did goes to the indexer as messages (``AudioDeleted``,
``SegmentCompacted``), so the indexer stays the archive's one writer.
Compaction encodes minutes of audio at a time, so it runs on its own thread
and the supervisor keeps watching its children meanwhile.
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
from .retention import CHECK_EVERY_SECONDS, enforce

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upkeep:
    """What housekeeping a run does: a disk budget (bytes), compaction (format, age)."""

    max_disk: int | None = None
    compact: Format | None = None
    compact_after: timedelta = timedelta(hours=1)

    def __bool__(self) -> bool:
        return self.max_disk is not None or self.compact is not None


class Housekeeper(threading.Thread):
    """Every CHECK_EVERY_SECONDS: compact what is due, then keep to the disk budget."""

    def __init__(self, home: Home, upkeep: Upkeep, send: Callable[[object], None]) -> None:
        super().__init__(name="housekeeping", daemon=True)
        self.home = home
        self.upkeep = upkeep
        self.send = send
        self.stopping = threading.Event()

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
        if u.compact is not None:
            keep_going = lambda: not self.stopping.is_set()  # noqa: E731
            compact(self.home, engine, u.compact, u.compact_after, self.send, keep_going=keep_going)
        if u.max_disk is not None:
            enforce(self.home, engine, u.max_disk, self.send)

    def stop(self) -> None:
        self.stopping.set()
        self.join()
