"""pipeline: record a computer's audio, transcribe it offline, find any spoken moment again."""

from . import errors as _errors
from .errors import *  # noqa: F403 (every error class; the list is errors.__all__)

__version__ = "0.1.0"

# The archive and search pull in SQLAlchemy and Alembic (over a second to import);
# every child process imports this package first, so they load only when asked for.
_LAZY = {
    "Archive": "archive",
    "Elsewhere": "remote",
    "Moment": "archive",
    "SessionInfo": "archive",
    "Hit": "search",
    "SessionText": "export",
    "Supercut": "supercut",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_LAZY, *_errors.__all__]
