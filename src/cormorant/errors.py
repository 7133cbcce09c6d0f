"""User-facing errors.

Every mistake a user can make (a missing file, an unknown pipeline name, an index built with
another encoder) raises :class:`CormorantError` with a one-line message. The CLI prints that
message and exits non-zero; the service turns it into a 4xx. Anything else is a bug.
"""

from __future__ import annotations


class CormorantError(Exception):
    """An error caused by the caller's input, with a message meant for a person."""


class DataError(CormorantError):
    """A dataset, qrels, run or query file is missing or malformed."""


class UnreadableFileError(DataError):
    """A dataset file that cannot be read at all: not UTF-8 text, or a broken gzip file."""


class PipelineError(CormorantError):
    """A pipeline string or stage got input it cannot use.

    ``caret``, when set, is the column of the message's one line that a ``^`` on the next
    line should point at (where parsing stopped).
    """

    caret: int | None = None


class IndexFormatError(CormorantError):
    """An index directory is missing, truncated, foreign, or of another version."""


class MissingExtraError(CormorantError):
    """A feature needs an optional dependency that is not installed."""

    def __init__(self, feature: str, extra: str, cause: BaseException | None = None) -> None:
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"{feature} needs the [{extra}] extra: pip install 'cormorant[{extra}]'{detail}"
        )


def did_you_mean(name: str, choices: object) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to a mistyped ``name``, or "".

    Example:
        >>> did_you_mean("bm52", ["bm25", "dense"])
        "; did you mean 'bm25'?"
    """
    import difflib

    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)  # type: ignore[attr-defined]
    return f"; did you mean {close[0]!r}?" if close else ""


class ReadOnlyIndex(CormorantError):
    """A write to an index that cannot take one (its stages, or its directory)."""


class IndexLocked(CormorantError):
    """Another process is writing to the index (serving it, or adding to it)."""


class IndexWriteError(CormorantError):
    """A stage could not take a write (a document it cannot index, or its files refused it);
    nothing was written."""
