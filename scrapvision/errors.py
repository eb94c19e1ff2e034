"""One exception type for every problem a user can fix, so the CLI can print it as one line."""

from __future__ import annotations


class ScrapvisionError(Exception):
    """A user-facing error: bad input, bad config, missing file. The CLI prints it and exits 2."""


class ConfigError(ScrapvisionError, ValueError):
    """A config key is unknown, has the wrong type, or the file cannot be read."""


class DataError(ScrapvisionError, ValueError):
    """A data file, row or label is missing or malformed."""


class CheckpointError(ScrapvisionError):
    """A checkpoint is unreadable, unsafe, or belongs to another task or architecture."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an exception's message (its type name when it has none), for
    one-line errors that wrap a library's multi-line message."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]
