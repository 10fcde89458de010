"""One writer per data home: the lock file that recorders and ingests hold.

``home/pipeline.lock`` holds the pid of the process writing the home. On
POSIX it is also ``flock``-ed, so a lock whose process died (a crash, a
power cut) is free again, and the pid left in it tells the next run that
the last one did not stop cleanly and the home needs ``repair``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import Home
from .errors import HomeLockedError

LOCK_NAME = "pipeline.lock"

try:
    import fcntl
except ImportError:  # Windows: the pid alone decides
    fcntl = None


@dataclass(frozen=True)
class Held:
    """A held lock; ``stale_pid`` is the pid of an earlier run that died holding it."""

    path: Path
    stale_pid: int | None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def hold(home: Home) -> Iterator[Held]:
    """Hold the home's lock for a run; HomeLockedError if a live process has it."""
    home.ensure()
    path = home.root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        previous = os.read(fd, 64).decode(errors="replace").strip()
        pid = int(previous) if previous.isdigit() else None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HomeLockedError(_busy(home, pid)) from None
        elif pid is not None and pid != os.getpid() and _alive(pid):
            raise HomeLockedError(_busy(home, pid))
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        yield Held(path, pid if pid != os.getpid() else None)
        os.ftruncate(fd, 0)  # a clean stop leaves an empty lock file
    finally:
        os.close(fd)


def unclean(home: Home) -> int | None:
    """The pid of a run that died holding the home's lock, if one did."""
    path = home.root / LOCK_NAME
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    if fcntl is not None:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # held right now by a live run
            fcntl.flock(f, fcntl.LOCK_UN)
        return pid
    return None if _alive(pid) else pid


def _busy(home: Home, pid: int | None) -> str:
    who = f"pid {pid}" if pid else "another process"
    return (
        f"another pipeline ({who}) is writing {home.root}; stop it first, or record "
        "into another --home"
    )
