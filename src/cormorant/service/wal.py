"""The append-only write log of a live index: one JSON line per acknowledged write.

A write is answered only after its line is on disk (``fsync``), so a crash or ``kill -9`` can
lose nothing that was acknowledged. A crash in the middle of an append leaves at most one
partial last line; it was never acknowledged, and opening the log cuts it off. A bad line
anywhere else means the file was damaged by something other than a crash, and opening stops
with an error instead of guessing.

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

from cormorant.errors import IndexFormatError

log = logging.getLogger(__name__)


class WriteLog:
    """JSON lines appended with ``O_APPEND`` and made durable with ``fsync``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def read(self) -> list[dict[str, Any]]:
        """Every complete record, oldest first; a torn last line is cut off the file."""
        if not self.path.exists():
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
                                       " Restore the file or remove the line by hand")
            records.append(record)
            end += len(line) + 1
        if end < len(data):
            # Written without its newline: the process died mid-append, before the answer.
            log.warning("%s: dropping an unfinished last record (%d bytes)", self.path,
                        len(data) - end)
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` and return once it is on disk."""
        line = (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        fd = self._open()
        written = 0
        while written < len(line):  # one write almost always; loop for the partial case
            written += os.write(fd, line[written:])
        os.fsync(fd)

    def _open(self) -> int:
        if self._fd is None:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if created:
                _fsync_dir(self.path.parent)  # the new file's name must survive a crash too
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
