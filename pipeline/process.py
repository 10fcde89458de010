"""What every child process does first: leave signals to the supervisor, take a name."""

from __future__ import annotations

import contextlib
import queue
import signal
from collections.abc import Callable
from pathlib import Path

COMM = Path("/proc/self/comm")


def become_child(name: str, log_q=None) -> None:
    """Ignore SIGINT (the supervisor decides when to stop), show ``name`` in ps/top,
    and send log records to the supervisor's ``log_q``.

    Linux limits the name to 15 bytes; elsewhere the name is only a label.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_q is not None:
        from .logs import to_queue

        to_queue(log_q)
    with contextlib.suppress(OSError):
        COMM.write_text(name[:15])


def nonblocking(q) -> Callable[[object], None]:
    """A put for status messages: they are nice to have, so never wait for room."""

    def put(message: object) -> None:
        with contextlib.suppress(queue.Full):
            q.put_nowait(message)

    return put


def start_children(procs) -> None:
    """Start children with SIGINT ignored from their first instruction.

    A terminal's Ctrl+C reaches the whole process group; a child still
    importing would die of it. An ignored signal stays ignored across exec,
    so children are born deaf to it, and only the supervisor decides.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)
