"""A retriever whose index is a list of segments, so it takes writes: the base of ``bm25``,
``dense``, ``chamfer`` and ``muvera``.

A kind says how to index some documents into one segment's data (:meth:`index_documents`),
how to combine the live rows of several segments into one (:meth:`combine`), and how to write
and read one segment's files; this class does the rest: deletions, the snapshot a search
reads, buffering small segments, committing them to disk and reading them back.
(:mod:`cormorant.index.segments` explains the model.)

Example:
    >>> from cormorant.retrieval.bm25 import BM25Retriever
    >>> from cormorant.types import Corpus, Document
    >>> bm25 = BM25Retriever.build(Corpus.from_documents([Document("a", "cats purr")]))
    >>> bm25.publish(bm25.prepare_write([Document("b", "dogs bark")], removed=["a"]))
    >>> list(bm25.search("dogs", k=5)["0"]), bm25.segments.count
    (['b'], 1)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.data.files import atomic_write
from cormorant.errors import IndexFormatError
from cormorant.index.faiss_index import RETRAIN_GROWTH
from cormorant.index.format import atomic_directory, fsync_dir, read_meta, write_meta
from cormorant.index.segments import BASE, Segment, SegmentBox, Segments
from cormorant.retrieval.base import Retriever
from cormorant.types import Corpus, Document

SEGMENT_IDS = "doc_ids.json"
MAX_BUFFERED = 8
"""Segments held in memory only (written since the last commit) before the next write
combines them into one: a search reads every segment, and a thousand one-document writes
must not become a thousand segments."""


class SegmentedRetriever(Retriever):
    """A stored stage made of segments (see the module docstring).

    Subclasses implement :meth:`index_documents`, :meth:`combine`, :meth:`write_segment`
    and :meth:`read_segment`, and search every segment of :attr:`segments`, skipping deleted
    rows.
    """

    writable: ClassVar[bool] = True

    def __init__(self, settings: dict[str, Any], segments: Segments,
                 trained_on: int | None = None) -> None:
        super().__init__(settings)
        self.box = SegmentBox(segments)
        self.trained_on = trained_on
        """Documents a trained index kind (IVF, PQ) learnt from; None for kinds that learn
        nothing."""

    @property
    def segments(self) -> Segments:
        """The snapshot a search started now reads."""
        return self.box.current

    # -- what a kind implements --------------------------------------------------------------

    def index_documents(self, documents: list[Document]) -> Any:
        """One segment's data over ``documents``, row i for ``documents[i]``."""
        raise NotImplementedError

    def index_rows(self, documents: list[Document]) -> tuple[list[str], Any]:
        """(row ids, segment data) over ``documents``: one row per document, or, for a kind
        that splits long documents into windows, one per window under its document's id."""
        return [d.doc_id for d in documents], self.index_documents(documents)

    def combine(self, parts: list[tuple[Segment, np.ndarray]], retrain: bool = False) -> Any:
        """One segment's data over the given rows of each segment, in that order; with
        ``retrain``, a kind that learns from its documents (IVF, PQ) learns again from these."""
        raise NotImplementedError

    def write_segment(self, data: Any, directory: Path) -> dict[str, Any] | None:
        """Write one segment's data into ``directory`` (which exists); may return what the
        segment's ``meta.json`` should record about it."""
        raise NotImplementedError

    def read_segment(self, directory: Path, doc_ids: list[str]) -> Any:
        """Read what :meth:`write_segment` wrote."""
        raise NotImplementedError

    # -- writes ------------------------------------------------------------------------------

    def prepare_write(self, added: list[Document], removed: Collection[str]) -> Segments:
        """The snapshot after adding ``added`` (replacing documents with their ids) and deleting
        ``removed``; nothing is published, so a failure here changes nothing."""
        snapshot = self.segments.deleting({*removed, *(d.doc_id for d in added)})
        if added:
            segment = Segment.made(*self.index_rows(added))
            snapshot = snapshot.adding(segment)
        return self._buffered(snapshot)

    def publish(self, snapshot: Segments) -> None:
        """Make ``snapshot`` what searches read (one assignment)."""
        self.box.current = snapshot

    def share(self, owner: SegmentedRetriever) -> None:
        """Read (and write) ``owner``'s segments: another loaded copy of the same stored stage."""
        self.box = owner.box

    def _buffered(self, snapshot: Segments) -> Segments:
        fresh = [s for s in snapshot if s.name is None]
        if len(fresh) <= MAX_BUFFERED:
            return snapshot
        merged = self.merged_segment(fresh, name=None)
        kept = tuple(s for s in snapshot if s.name is not None)
        return Segments(kept + ((merged,) if merged is not None else ()))

    def merged_segment(self, segments: list[Segment], name: str | None,
                       retrain: bool = False) -> Segment | None:
        """One segment holding the live documents of ``segments``; None if none is live."""
        parts = [(s, s.live_rows()) for s in segments]
        parts = [(s, rows) for s, rows in parts if len(rows)]
        if not parts:
            return None
        ids = [s.doc_ids[r] for s, rows in parts for r in rows.tolist()]
        return Segment.made(ids, self.combine(parts, retrain), name)

    def compact(self, retrain: bool | None = None) -> None:
        self.publish(Segments((self.compacted(retrain),)))

    def part(self, keep: Callable[[str], bool]) -> SegmentedRetriever | None:
        """A copy holding only the live documents whose id ``keep`` accepts, in one segment
        coded the way this copy codes a write (the same IVF centroids, PQ codebooks, FDE
        settings): one shard of a sharded index, its shared state learnt once. None if it
        would hold no document. Nothing is encoded again.

        Example:
            >>> from cormorant.retrieval.bm25 import BM25Retriever
            >>> from cormorant.types import Corpus, Document
            >>> bm25 = BM25Retriever.build(Corpus.from_documents(
            ...     [Document("a", "cats purr"), Document("b", "dogs bark")]))
            >>> list(bm25.part(lambda doc_id: doc_id == "b").segments.ids())
            ['b']
        """
        kept = [s.without([r for r, doc_id in enumerate(s.doc_ids) if not keep(doc_id)])
                for s in self.segments]
        merged = self.merged_segment(kept, name=BASE, retrain=False)
        if merged is None:
            return None
        piece = copy.copy(self)
        piece.box = SegmentBox(Segments((merged,)))
        return piece

    # -- one shard built from its own documents ---------------------------------------------

    @classmethod
    def builds_parts(cls, settings: dict[str, Any]) -> bool:
        """Whether a shard's copy of this stage can be built by :meth:`create_part` from the
        shard's documents and what :meth:`learn_shared` learnt once; a sharded build of a
        stage that cannot builds it whole and splits it (:meth:`part`)."""
        return False

    @classmethod
    def learn_shared(cls, corpus: Corpus, settings: dict[str, Any]) -> Any:
        """What every shard's copy must share, learnt once over ``corpus`` (IVF centroids, PQ
        codebooks: a trained empty index), picklable for a Ray task; None if nothing."""
        return None

    @classmethod
    def create_part(cls, corpus: Corpus, settings: dict[str, Any], keep: Callable[[str], bool],
                    shared: Any) -> SegmentedRetriever | None:
        """The stage over the documents of ``corpus`` whose id ``keep`` accepts, built with
        ``shared`` (from :meth:`learn_shared`), holding about one shard in memory and
        encoding nothing (vectors come from the embedding cache): what :meth:`part` of the
        whole stage would hold. None if it would hold no document."""
        raise NotImplementedError(f"{cls.name} builds no shard on its own")

    def ready_for_writes(self) -> None:
        for segment in self.segments:
            segment.rows  # noqa: B018  (the id -> row map a write's deletions look up)

    def snapshot(self) -> Segments:
        return self.segments

    def reopen(self, directory: Path) -> None:
        ids = list(self.segments.ids())
        self.publish(Segments((Segment.made(ids, self.read_segment(directory, ids), BASE),)))

    def compacted(self, retrain: bool | None = None) -> Segment:
        """Every live document in one segment (what a merge writes as the stage's base).
        ``retrain``: see :meth:`combine`; None retrains a trained kind once the collection
        has grown to RETRAIN_GROWTH times what it learnt from."""
        count = self.segments.count
        if retrain is None:
            retrain = self.trained_on is not None and count >= RETRAIN_GROWTH * self.trained_on
        merged = self.merged_segment(list(self.segments), name=BASE, retrain=retrain)
        if merged is None:
            raise IndexFormatError(f"{self.name}: every document is deleted; an index needs at"
                                   " least one (add documents before merging)")
        if retrain and self.trained_on is not None:
            self.trained_on = count
        return merged

    def base_data(self) -> Any:
        """The data to write as the stage's own files: the base segment's when it is the only
        one and nothing is deleted, else every live document combined."""
        items = self.segments.items
        if len(items) == 1 and not items[0].deleted_count:
            return items[0].data
        return self.compacted().data

    # -- committing to disk ------------------------------------------------------------------

    def commit_segments(self, folder: Path, generation: int) -> dict[str, Any]:
        """Write every segment and deletion mask not on disk yet under ``folder``; returns the
        record a manifest keeps to read them back. Files already written are not rewritten."""
        folder.mkdir(parents=True, exist_ok=True)
        committed: list[Segment] = []
        for number, segment in enumerate(self.segments):
            if segment.name is None:
                name = f"seg-{generation:06d}-{number:03d}"
                with atomic_directory(folder / name) as tmp:
                    extra = self.write_segment(segment.data, tmp) or {}
                    (tmp / SEGMENT_IDS).write_text(json.dumps(segment.doc_ids))
                    write_meta(tmp, {"kind": "segment", "stage": self.name,
                                     "count": len(segment), **extra})
                segment = replace(segment, name=name,
                                  data=self.read_segment(folder / name, segment.doc_ids))
            if segment.deleted_count and segment.mask_file is None:
                mask_file = f"{segment.name or 'base'}.del-{generation:06d}.npy"
                with atomic_write(folder / mask_file, "wb") as handle:
                    np.save(handle, np.packbits(segment.deleted))
                segment = replace(segment, mask_file=mask_file)
            committed.append(segment)
        fsync_dir(folder)
        # Same documents, same masks: only names changed, so searches may keep either.
        self.box.current = Segments(tuple(committed))
        return {"segments": [{"name": s.name, "mask": s.mask_file} for s in committed]}

    def restore_segments(self, folder: Path, record: dict[str, Any], verify: bool) -> None:
        """Read back the segments and masks of a manifest ``record`` (the base is loaded)."""
        base = self.segments.items[0]
        items: list[Segment] = []
        for entry in record.get("segments", []):
            name, mask_file = entry["name"], entry.get("mask")
            if name == BASE:
                segment = base
            else:
                read_meta(folder / name, verify=verify)
                ids = json.loads((folder / name / SEGMENT_IDS).read_text())
                segment = Segment.made(ids, self.read_segment(folder / name, ids), name)
            if mask_file:
                segment = segment.with_mask(_read_mask(folder / mask_file, len(segment)),
                                            mask_file)
            items.append(segment)
        self.box.current = Segments(tuple(items))

    def referenced_files(self) -> set[str]:
        """The names under the commit folder that the current segments use."""
        return {n for s in self.segments for n in (s.name, s.mask_file) if n}


def _read_mask(path: Path, rows: int) -> np.ndarray:
    try:
        packed = np.load(path)
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path}: cannot read the deletion mask ({exc})") from None
    mask = np.unpackbits(packed)[:rows].astype(bool)
    if len(mask) != rows:
        raise IndexFormatError(f"{path}: the deletion mask does not fit its segment")
    return mask
