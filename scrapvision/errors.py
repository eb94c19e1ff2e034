"""One exception type for every problem a user can fix, so the CLI can print it as one line, and the one
helper that quotes any exception in one line."""

from __future__ import annotations


class ScrapvisionError(Exception):
    """A user-facing error: bad input, bad config, missing file. The CLI prints it and exits 2."""


class ConfigError(ScrapvisionError, ValueError):
    """A config key is unknown, has the wrong type, or the file cannot be read."""


class DataError(ScrapvisionError, ValueError):
    """A data file, row or label is missing or malformed."""


class CheckpointError(ScrapvisionError):
    """A checkpoint is unreadable, unsafe, or belongs to another task or architecture."""


def first_line(exc: BaseException, limit: int | None = 300) -> str:
    """The one line of ``exc``'s message that a one-line error should quote.

    An empty message (a bare ``assert``, ``raise KeyError()``) gives the exception's type name, so the
    result can always follow a colon. A DataLoader worker's error, re-raised by PyTorch as "Caught X in
    DataLoader worker process N. Original Traceback ...", gives the original message: the traceback's
    last line without its ``module.X: `` prefix. ``limit`` caps the length (None: no cap).
    """
    text = str(exc).strip()
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        text = text.splitlines()[-1]
        cls = type(exc)
        for prefix in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
    lines = text.strip().splitlines()
    line = lines[0].strip() if lines else type(exc).__name__
    return line if limit is None else line[:limit]


def one_line(value: object) -> str:
    """``value`` as text safe inside a one-line error: a header cell read from a user's file may hold line breaks."""
    text = str(value)
    return repr(text) if any(c in text for c in "\r\n") else text
