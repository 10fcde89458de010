"""What every child process does first: leave signals to the supervisor, take a name."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

COMM = Path("/proc/self/comm")
JOIN_SECONDS = 10.0  # a child's time to finish on its own at the end of a run
TERMINATE_SECONDS = 3.0


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


def shut_down(procs, *, join_seconds: float = JOIN_SECONDS) -> None:
    """Join with a timeout, then terminate, then kill: never hang on exit."""
    for p in procs:
        p.join(join_seconds if p.exitcode is None else 0)
    for p in procs:
        if p.is_alive():
            log.info("terminating %s", p.name)
            p.terminate()
            p.join(TERMINATE_SECONDS)
        if p.is_alive():
            p.kill()
            p.join()
