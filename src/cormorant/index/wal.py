"""The append-only write log of an index: one JSON line per acknowledged write since the last
commit.

A write is answered only after its line is on disk (``fsync``), so a crash or ``kill -9`` can
lose nothing that was acknowledged. A crash in the middle of an append leaves at most one
partial last line; it was never acknowledged, and the writer that opens the log next cuts it
off. An append that fails (a full disk) cuts its own partial line off before it reports the
failure, and the next append checks the file ends where the last good line ended, so a
later write is never glued to a torn one. A bad line anywhere else means the file was damaged
by something other than a crash, and opening stops with an error instead of guessing.

Example:
    >>> log = WriteLog("/tmp/live/log.jsonl")  # doctest: +SKIP
    >>> log.append({"seq": 1, "op": "delete", "ids": ["d1"]})  # doctest: +SKIP
    >>> [r["seq"] for r in log.read()]  # doctest: +SKIP
    [1]
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cormorant.errors import CormorantError, IndexFormatError
from cormorant.index.format import fsync_dir

log = logging.getLogger(__name__)


class WriteLog:
    """JSON lines appended with ``O_APPEND`` and made durable with ``fsync``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._end: int | None = None  # where the last good line ends, once known

    def read(self, repair: bool = False) -> list[dict[str, Any]]:
        """Every complete record, oldest first. With ``repair`` (the writer, holding the
        index's lock) a torn last line is cut off the file; a reader leaves it, since it may
        be an append still under way."""
        if not self.path.exists():
            self._end = 0
            return []
        data = self.path.read_bytes()
        records: list[dict[str, Any]] = []
        end = 0  # byte offset just past the last good line
        lines = data.split(b"\n")
        for number, line in enumerate(lines[:-1], start=1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
                raise IndexFormatError(f"{self.path} line {number} is damaged; it is not a"
                                       " crash leftover (those are last and unterminated)."
                                       " Restore the file from a backup")
            records.append(record)
            end += len(line) + 1
        if repair:
            if end < len(data):
                # Written without its newline: the process died mid-append, before the answer.
                log.warning("%s: dropping an unfinished last record (%d bytes)", self.path,
                            len(data) - end)
                self._cut(end)
            self._end = end
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` and return once it is on disk.

        Raises:
            CormorantError: the disk refused it; the log is as it was before the call.
        """
        line = (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        fd = self._open()
        if self._end is None:
            self.read(repair=True)
        elif os.fstat(fd).st_size != self._end:
            self._cut(self._end)  # a torn line that an earlier failure could not remove
        try:
            written = 0
            while written < len(line):  # one write almost always; loop for the partial case
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError as exc:
            try:
                self._cut(self._end or 0)
            except OSError:
                pass  # still torn: the next append (or opening) cuts it
            raise CormorantError(f"cannot write {self.path}: {exc.strerror or exc}; the write"
                                 " was not made") from None
        self._end = (self._end or 0) + len(line)

    def reset(self) -> None:
        """Empty the log (its records are committed elsewhere)."""
        if self.path.exists():
            self._cut(0)
        self._end = 0

    def _cut(self, size: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(size)
            os.fsync(handle.fileno())
        self._end = size

    def _open(self) -> int:
        if self._fd is None:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if created:
                fsync_dir(self.path.parent)  # the new file's name must survive a crash too
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
