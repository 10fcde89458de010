"""pipeline: record a computer's audio, transcribe it offline, find any spoken moment again."""

from .archive import Archive, Moment, SessionInfo
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
from .search import Hit

__version__ = "0.1.0"

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
