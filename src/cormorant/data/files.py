"""Reading and writing text files: plain or gzip, line by line, and atomic writes."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cormorant.errors import CormorantError, DataError, UnreadableFileError


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or its gzipped twin ``folder/stem.gz``, whichever exists."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def reject_options(format_name: str, options: dict[str, object]) -> None:
    """Loaders of formats without options fail clearly on one meant for another format."""
    if options:
        raise DataError(f"{format_name} datasets take no {', '.join(sorted(options))} option"
                        " (--documents is for BRIGHT domains)")


def open_text(path: str | Path) -> _TextLines:
    """Open a UTF-8 text file for reading lines, transparently un-gzipping ``.gz`` files.

    Reading fails with one :class:`DataError` naming the file for what is not UTF-8 text
    (binary, UTF-16, Latin-1) and for a ``.gz`` file that is not gzip or is cut short.

    Example:
        >>> with open_text("queries.tsv") as lines:  # doctest: +SKIP
        ...     first = next(iter(lines))
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    return _TextLines(path)


class _TextLines:
    """Lines of a text file; decoding and decompression errors become one DataError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw: IO[bytes] = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        # errors="strict" is the default; a BOM of UTF-16 is named in the message below.
        self.handle = io.TextIOWrapper(raw, encoding="utf-8")

    def __enter__(self) -> _TextLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def close(self) -> None:
        self.handle.close()

    def __iter__(self) -> Iterator[str]:
        line_no = 0
        try:
            for line_no, line in enumerate(self.handle, start=1):  # noqa: B007
                yield line
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise self._unreadable(exc, f" (near line {line_no + 1})") from None

    def read(self, size: int = -1) -> str:
        """Up to ``size`` characters (all with -1), with the same one-line errors."""
        try:
            return self.handle.read(size)
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise self._unreadable(exc, "") from None

    def _unreadable(self, exc: Exception, where: str) -> UnreadableFileError:
        if isinstance(exc, UnicodeDecodeError):
            return UnreadableFileError(f"{self.path}: not UTF-8 text{where}"
                                       f"{_encoding_hint(exc.object[:4])}")
        return UnreadableFileError(f"{self.path}: not a readable gzip file"
                                   f" ({str(exc) or 'cut short'})")


def _encoding_hint(start: bytes) -> str:
    if start[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return " (it looks like UTF-16; save it as UTF-8)"
    if b"\x00" in start:
        return " (it looks binary)"
    return ""


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The whole of a small UTF-8 text file (a config), or one CormorantError saying why not.

    Example:
        >>> read_text_file("experiment.yaml", "experiment file")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise CormorantError(f"{what} not found: {path}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CormorantError(f"{what} {path} is not UTF-8 text{_encoding_hint(exc.object[:4])}"
                             ) from None


def yaml_problem(exc: Exception) -> str:
    """A YAML or JSON parse error as one line: where, and what."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        problem = getattr(exc, "problem", None) or "invalid"
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Parse a JSON-lines file, naming the file and line of the first malformed record."""
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object per line")
            yield record


def publishable_mode() -> int:
    """The permissions a plain ``open()`` would give a new file (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# Errors of the disk rather than of the program: a full disk, a quota, a read-only mount.
# ENOENT and ENOTDIR too: a folder that refuses new files, as /proc does (fuzz-found).
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES,
                 errno.EPERM, errno.EPIPE, errno.ENOENT, errno.ENOTDIR, errno.EISDIR}


def output_target(path: str | Path) -> Path | None:
    """Where writing ``path`` really goes: ``None`` for ``-`` (standard output); the path
    itself for a device or a pipe (opened as given, since ``/dev/stdout``'s link leads to a
    ``pipe:[...]`` name no one can open); the target, symlinks followed, for a regular file
    or a new path.

    Checked before any work, so a long evaluation does not end in a refused output.

    Example:
        >>> output_target("-") is None
        True

    Raises:
        CormorantError: the path is a directory, or lies under something that is not one.
    """
    if str(path) == "-":
        return None
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        return path  # a device, a pipe, a socket: written through
    target = Path(os.path.realpath(path))  # write through a symlink, never replace it
    if target.is_dir():
        raise CormorantError(f"cannot write {path}: it is a directory")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CormorantError(f"cannot write {path}: {parent} is not a directory")
            break
    return target


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` so that no reader ever sees half of it.

    A regular file (or a new path) is written to a temporary beside it and renamed into
    place on success: a crash leaves the old file (or none). A symlink is followed and its
    target written. A device, pipe or ``-`` (standard output) is written through, since
    renaming over ``/dev/stdout`` would replace the device with a file.

    Example:
        >>> with atomic_write("-") as out:  # doctest: +SKIP
        ...     out.write("to standard output")

    Raises:
        CormorantError: the path is a directory or under a file, or the disk refused the write
        (full, read-only, no permission); the message names the path.
    """
    target = output_target(path)
    try:
        if target is None:
            yield from _write_stdout(mode)
        elif target.exists() and not target.is_file():
            yield from _write_through(target, mode)
        else:
            yield from _write_replace(target, mode)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        raise CormorantError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_stdout(mode: str) -> Iterator[IO[Any]]:
    stream = sys.stdout.buffer if "b" in mode else sys.stdout
    yield stream
    stream.flush()


def _write_through(target: Path, mode: str) -> Iterator[IO[Any]]:
    # A device or a pipe: no temporary, no fsync (pipes refuse it); the close reports errors.
    with open(target, mode, encoding=None if "b" in mode else "utf-8") as handle:
        yield handle


def _write_replace(path: Path, mode: str) -> Iterator[IO[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, publishable_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
