"""A SEAL corpus index in shards, so that building it needs memory for one shard only.

``pydivsufsort`` sorts a whole token stream in memory (about 9 bytes a token). A corpus larger
than that is cut, between documents, into shards of at most ``shard_tokens`` tokens; each shard
is one :class:`SubstringIndex`, sorted on its own, written to disk and reopened memory-mapped
before the next is read, as infini-gram does with its suffix-array shards. The shards' streams
laid end to end are exactly the stream one index would hold, so stream offsets and document
rows are global and every answer equals the one-index answer:

- ``count``: the sum over shards (an n-gram never crosses a document, so never a shard);
- ``next_tokens`` / ``next_tokens_at_start``: the union over shards;
- ``positions`` / ``doc_of`` / ``document``: shard answers shifted by the shard's offset.

A corpus that fits in one shard (every BEIR corpus at the default) is a single index, written
with the unprefixed file names of :mod:`cormorant.retrieval.seal.substring`; indexes written
before shards existed load unchanged.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.retrieval.seal.substring import FILES, SubstringIndex, SuccessorCache

log = logging.getLogger(__name__)
# 2^27 tokens: about 3 GB while a shard sorts (numpy's peak, ~24 bytes a token), 1 GB on
# disk; SciFact holds 1.7M tokens. Sorted shards wait in $TMPDIR until save() moves them.
SHARD_TOKENS = 1 << 27


class ShardedIndex:
    """The :class:`SubstringIndex` questions, answered over shards of the corpus.

    Example:
        >>> index = ShardedIndex.build([[5, 6, 7], [6, 7, 6], [7, 6]], vocab_size=10,
        ...                            shard_tokens=3)
        >>> len(index.shards), index.count([7, 6]), index.docs([7, 6])
        (3, 2, [1, 2])
    """

    def __init__(self, shards: list[SubstringIndex], spill: Path | None = None) -> None:
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        self.shards = shards
        self.vocab_size = shards[0].vocab_size
        # Where shard s starts in the global stream and in the global document rows.
        lengths = [int(s.tokens.shape[0]) for s in shards]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = [s.num_documents for s in shards]
        self.first_rows = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self.doc_starts = np.concatenate(
            [s.doc_starts[:-1] + base for s, base in zip(shards, self.offsets, strict=False)]
            + [self.offsets[-1:]]).astype(np.int64)
        self._counts: np.ndarray | None = None
        self._successors = SuccessorCache()
        self._spill = spill  # shards sorted during build wait here until save() moves them
        if spill is not None:
            weakref.finalize(self, shutil.rmtree, spill, True)

    # ------------------------------------------------------------------ building and files
    @classmethod
    def build(cls, documents: Iterable[Sequence[int]], vocab_size: int,
              shard_tokens: int = SHARD_TOKENS) -> ShardedIndex:
        """Index the token ids of each document (in corpus order), one shard at a time.

        A corpus of at most ``shard_tokens`` tokens stays one in-memory index. Past that, each
        full shard is sorted, written to a temporary folder and reopened memory-mapped, so peak
        memory is one shard's, whatever the corpus size.
        """
        if shard_tokens < 1:
            raise ValueError("shard_tokens must be at least 1")
        shards: list[SubstringIndex] = []
        spill: Path | None = None
        for batch, more in _batches(documents, shard_tokens):
            shard = SubstringIndex.build(batch, vocab_size)
            if more or spill is not None:
                spill = spill or Path(tempfile.mkdtemp(prefix="cormorant-seal-shards-"))
                shard = _spilled(shard, spill, len(shards))
                log.info("seal: shard %d sorted (%d tokens)", len(shards) + 1, shard.total_tokens)
            shards.append(shard)
        if not shards:
            shards.append(SubstringIndex.build([], vocab_size))
        return cls(shards, spill)

    def save(self, directory: Path) -> dict[str, Any]:
        """Write every shard into ``directory``; return what the index's metadata records."""
        if len(self.shards) == 1:
            return self.shards[0].save(directory)
        shards = []
        for i, shard in enumerate(self.shards):
            prefix = _prefix(i)
            if self._spill is not None and (self._spill / f"{prefix}{FILES[0]}").exists():
                for name in FILES:  # sorted already: move the files, do not copy a shard
                    shutil.move(self._spill / f"{prefix}{name}", directory / f"{prefix}{name}")
                shards.append({"vocab_size": self.vocab_size, "tokens": shard.total_tokens,
                               "documents": shard.num_documents})
            else:
                shards.append(shard.save(directory, prefix))
        return {"vocab_size": self.vocab_size, "tokens": self.total_tokens,
                "documents": self.num_documents, "shards": shards}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], mmap: bool = True) -> ShardedIndex:
        """Open what :meth:`save` wrote (or a one-array index written before shards)."""
        if "shards" not in meta:
            return cls([SubstringIndex.load(directory, meta, mmap)])
        return cls([SubstringIndex.load(directory, shard, mmap, _prefix(i))
                    for i, shard in enumerate(meta["shards"])])

    # ------------------------------------------------------------------------- queries
    @property
    def num_documents(self) -> int:
        return int(self.first_rows[-1])

    @property
    def total_tokens(self) -> int:
        """N in the paper: corpus tokens, separators not counted."""
        return sum(s.total_tokens for s in self.shards)

    def token_counts(self) -> np.ndarray:
        """F of every single token, summed over shards."""
        if self._counts is None:
            self._counts = sum((s.token_counts() for s in self.shards[1:]),
                               self.shards[0].token_counts())
        return self._counts

    def count(self, ngram: Sequence[int]) -> int:
        """How often ``ngram`` occurs in the corpus (F(n)); the empty n-gram counts 0."""
        return sum(s.count(ngram) for s in self.shards)

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        """The distinct token ids that follow ``prefix`` somewhere in the corpus, ascending."""
        return self.next_token_array(prefix).tolist()

    def next_token_array(self, prefix: Sequence[int]) -> np.ndarray:
        """:meth:`next_tokens` as an int64 array, cached like a single index's."""
        if len(self.shards) == 1:
            return self.shards[0].next_token_array(prefix)
        key = tuple(int(t) for t in prefix)
        return self._successors.get(key, lambda: np.unique(np.concatenate(
            [s.next_token_array(key) for s in self.shards])))

    def next_tokens_at_start(self, prefix: Sequence[int]) -> np.ndarray:
        """Tokens that follow ``prefix`` where it opens a document, united over shards."""
        if len(self.shards) == 1:
            return self.shards[0].next_tokens_at_start(prefix)
        key = tuple(int(t) for t in prefix)
        return self._successors.get(("start", *key), lambda: np.unique(np.concatenate(
            [s.next_tokens_at_start(key) for s in self.shards])))

    def positions(self, ngram: Sequence[int], limit: int | None = None) -> np.ndarray:
        """Global stream offsets where ``ngram`` starts (at most ``limit``; shard order, then
        suffix order within a shard)."""
        found = []
        left = limit
        for shard, base in zip(self.shards, self.offsets, strict=False):
            if left is not None and left <= 0:
                break
            here = shard.positions(ngram, left)
            found.append(here + base)
            left = None if left is None else left - len(here)
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def doc_of(self, positions: np.ndarray) -> np.ndarray:
        """The document (global row) each global stream offset falls in."""
        return np.searchsorted(self.doc_starts, positions, side="right") - 1

    def docs(self, ngram: Sequence[int]) -> list[int]:
        """The documents (rows in corpus order) that contain ``ngram``, ascending."""
        return np.unique(self.doc_of(self.positions(ngram))).tolist()

    def document(self, row: int) -> np.ndarray:
        """The token ids of document ``row``."""
        shard = int(np.searchsorted(self.first_rows, row, side="right")) - 1
        return self.shards[shard].document(row - int(self.first_rows[shard]))


def _batches(documents: Iterable[Sequence[int]],
             shard_tokens: int) -> Iterator[tuple[list[np.ndarray], bool]]:
    """Documents grouped in corpus order, a group closing once it holds ``shard_tokens``
    tokens (a longer document is a shard of its own: documents are never split), each with
    whether more follow. Ids are held as int32 arrays, 4 bytes a token, not Python lists."""
    batch: list[np.ndarray] = []
    size = 0
    for ids in documents:
        array = np.asarray(ids, dtype=np.int32)
        if batch and size + array.size > shard_tokens:
            yield batch, True
            batch, size = [], 0
        batch.append(array)
        size += array.size
    if batch:
        yield batch, False


def _spilled(shard: SubstringIndex, spill: Path, number: int) -> SubstringIndex:
    """Write a sorted shard to the spill folder and reopen it memory-mapped (frees its RAM)."""
    prefix = _prefix(number)
    meta = shard.save(spill, prefix)
    return SubstringIndex.load(spill, meta, mmap=True, prefix=prefix)


def _prefix(number: int) -> str:
    return f"shard-{number:04d}."
