"""Immutable segments with deletions over them: how a stored stage takes writes.

Lucene's model, kept small. A stage's index is a list of segments. A segment holds the
documents one write (or one build, or one merge) indexed, in its own data structure, and is
never changed after it is made; deleting a document sets its bit in the segment's deletion
mask, a new array, so a search that started before the delete keeps the mask it read. A write
makes a new segment from the written documents only, so its cost follows what is written,
not the collection. A merge combines segments into one, leaving deleted rows behind.

The set of segments a search reads is a :class:`Segments` snapshot, replaced whole by each
write in one assignment (:class:`SegmentBox`): a search never sees half a write.

Example:
    >>> first = Segment.made(["a", "b"], data="built")
    >>> snap = Segments((first,)).deleting({"a"})
    >>> snap.count, snap.locate("b")
    (1, (0, 1))
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

BASE = ""
"""The name of a stage's first segment: the files ``index build`` (or a merge) wrote in the
stage's own folder."""


@dataclass(frozen=True)
class Segment:
    """One immutable segment: its documents' ids in row order, the stage's data over them, and
    which rows are deleted.

    A row is one entry of the stage's index: a document, or one window of a document when the
    stage splits long documents (``passages``). A document's windows are consecutive rows
    under its id, first window first, so ``doc_ids`` is also the window -> document map;
    deleting a document deletes all its rows.

    ``name`` is the folder a commit wrote it to (``BASE`` for the stage's own folder), or None
    while it lives only in memory (and in the write log). ``mask_file`` names the file that
    holds the current deletion mask, None if none does yet.
    """

    doc_ids: list[str]
    data: Any
    deleted: np.ndarray
    name: str | None = None
    mask_file: str | None = None
    deleted_count: int = 0

    @classmethod
    def made(cls, doc_ids: list[str], data: Any, name: str | None = None) -> Segment:
        """A segment with no deletions."""
        return cls(list(doc_ids), data, np.zeros(len(doc_ids), dtype=bool), name)

    @cached_property
    def rows(self) -> dict[str, int]:
        """Document id -> its first row (deleted rows included); built on first use."""
        # Built from the end so that a windowed document keeps its first row.
        last = len(self.doc_ids) - 1
        return dict(zip(reversed(self.doc_ids), range(last, -1, -1), strict=True))

    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def live_count(self) -> int:
        return len(self.doc_ids) - self.deleted_count

    def live_rows(self) -> np.ndarray:
        """The rows not deleted, in order."""
        return np.flatnonzero(~self.deleted)

    def row_of(self, doc_id: str) -> int | None:
        """The live row holding ``doc_id``, or None."""
        row = self.rows.get(doc_id)
        return None if row is None or self.deleted[row] else row

    def span(self, row: int) -> range:
        """The rows of the document whose first row is ``row``: one row, or its windows."""
        stop = row + 1
        doc_id = self.doc_ids[row]
        while stop < len(self.doc_ids) and self.doc_ids[stop] == doc_id:
            stop += 1
        return range(row, stop)

    def without(self, rows: Collection[int]) -> Segment:
        """A copy with ``rows`` deleted too (copy on write: searches keep the old mask)."""
        mask = self.deleted.copy()
        mask[list(rows)] = True
        return replace(self, deleted=mask, mask_file=None, deleted_count=int(mask.sum()))

    def with_mask(self, mask: np.ndarray, mask_file: str | None) -> Segment:
        """A copy with the deletion mask read back from ``mask_file``."""
        return replace(self, deleted=mask, mask_file=mask_file, deleted_count=int(mask.sum()))


@dataclass(frozen=True)
class Segments:
    """The segments one search reads, oldest first. Every change returns a new snapshot.
    ``count`` counts live rows: documents, or windows for a windowed stage."""

    items: tuple[Segment, ...]
    count: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "count", sum(s.live_count for s in self.items))

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def locate(self, doc_id: str) -> tuple[int, int] | None:
        """(segment position, row) of the live document ``doc_id``, or None."""
        for position, segment in enumerate(self.items):
            row = segment.row_of(doc_id)
            if row is not None:
                return position, row
        return None

    def locate_each(self, doc_ids: Iterable[str]) -> list[tuple[str, tuple[int, int]]]:
        """(doc id, (segment position, row)) of each live document among ``doc_ids``, in
        order; ids not live here (deleted, never indexed) are left out."""
        return [(d, w) for d in doc_ids if (w := self.locate(d)) is not None]

    def deleting(self, doc_ids: Collection[str]) -> Segments:
        """This snapshot with ``doc_ids`` deleted wherever they are live."""
        hits: dict[int, list[int]] = {}
        for doc_id in doc_ids:
            found = self.locate(doc_id)
            if found is not None:
                hits.setdefault(found[0], []).extend(self.items[found[0]].span(found[1]))
        if not hits:
            return self
        return Segments(tuple(seg.without(hits[i]) if i in hits else seg
                              for i, seg in enumerate(self.items)))

    def adding(self, segment: Segment) -> Segments:
        return Segments((*self.items, segment))

    def ids(self) -> Iterator[str]:
        """Every live document id, segment by segment."""
        for segment in self.items:
            for row in segment.live_rows().tolist():
                yield segment.doc_ids[row]


class SegmentBox:
    """The current snapshot of one stored stage, shared by every loaded copy of it (the
    service loads ``dense`` and ``dense(nprobe=64)`` over one stored index); a write replaces
    ``current`` in one assignment."""

    def __init__(self, segments: Segments) -> None:
        self.current = segments


def by_segment(located: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """Indexes into ``located`` ((segment position, row) pairs) grouped by segment position,
    each group in order: what a stage reading one segment at a time needs (one FAISS
    reconstruct or one sparse slice per segment, not one per document).

    Example:
        >>> by_segment([(0, 5), (1, 2), (0, 7)])
        {0: [0, 2], 1: [1]}
    """
    groups: dict[int, list[int]] = {}
    for i, (position, _) in enumerate(located):
        groups.setdefault(position, []).append(i)
    return groups
