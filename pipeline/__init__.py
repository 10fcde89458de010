"""pipeline: record a computer's audio, transcribe it offline, find any spoken moment again."""

from .errors import (
    CaptureError,
    ConfigError,
    DatabaseLockedError,
    IndexerError,
    Interrupted,
    ModelError,
    NotFoundError,
    PartialFailure,
    PipelineError,
    ProcessDiedError,
    QueryError,
    RecognizerError,
    ReplayError,
    SourceFileError,
)

__version__ = "0.1.0"

# The archive and search pull in SQLAlchemy and Alembic (over a second to import);
# every child process imports this package first, so they load only when asked for.
_LAZY = {"Archive": "archive", "Moment": "archive", "SessionInfo": "archive", "Hit": "search"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Archive",
    "CaptureError",
    "ConfigError",
    "DatabaseLockedError",
    "Hit",
    "IndexerError",
    "Interrupted",
    "ModelError",
    "Moment",
    "NotFoundError",
    "PartialFailure",
    "PipelineError",
    "ProcessDiedError",
    "QueryError",
    "RecognizerError",
    "ReplayError",
    "SessionInfo",
    "SourceFileError",
]
