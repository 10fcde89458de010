"""Logging: one line per message on stderr for the user, a rotating file in the data home.

Child processes hand their records to the supervisor through a queue
(``logging.handlers.QueueHandler``); the supervisor's ``QueueListener``
writes them, so one process owns the rotating file and rotation is safe.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
from collections.abc import Iterator

from .config import Home

LOG_BYTES = 5_000_000
LOG_BACKUPS = 5
FORMAT = "%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s"


def setup_cli(verbose: int) -> None:
    """stderr gets warnings, or with -v info and with -vv debug."""
    level = logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    # Alembic says at INFO how it sets itself up on every command (a dozen lines of plugins
    # and DDL modes): debugging detail, not what -v asks for (database.migrate says when
    # it upgrades a schema)
    logging.getLogger("alembic").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


def file_handler(home: Home) -> logging.Handler:
    folder = home.root / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        folder / "pipeline.log", maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    return handler


@contextlib.contextmanager
def collected(home: Home, log_q) -> Iterator[None]:
    """While a run lasts: the children's records (on ``log_q``) and ours go to the log file."""
    root = logging.getLogger()
    to_file = file_handler(home)
    root.addHandler(to_file)
    old_level = root.level
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    for handler in root.handlers:  # stderr keeps showing only what the user asked for
        if handler is not to_file and handler.level == logging.NOTSET:
            handler.setLevel(old_level or logging.WARNING)
    listener = logging.handlers.QueueListener(log_q, *root.handlers, respect_handler_level=True)
    listener.start()
    try:
        yield
    finally:
        listener.stop()
        root.removeHandler(to_file)
        root.setLevel(old_level)
        to_file.close()


def to_queue(log_q) -> None:
    """In a child process: send every record of INFO and above to the supervisor."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_q)]
    root.setLevel(logging.INFO)
