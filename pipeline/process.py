"""What every child process does first: leave signals to the supervisor, take a name."""

from __future__ import annotations

import contextlib
import queue
import signal
from collections.abc import Callable
from pathlib import Path

COMM = Path("/proc/self/comm")


def become_child(name: str) -> None:
    """Ignore SIGINT (the supervisor decides when to stop) and show ``name`` in ps/top.

    Linux limits the name to 15 bytes; elsewhere the name is only a label.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        COMM.write_text(name[:15])


def nonblocking(q) -> Callable[[object], None]:
    """A put for status messages: they are nice to have, so never wait for room."""

    def put(message: object) -> None:
        with contextlib.suppress(queue.Full):
            q.put_nowait(message)

    return put
