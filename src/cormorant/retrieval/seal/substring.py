"""A suffix array over the token ids of a whole corpus: SEAL's index of every n-gram.

The documents' token ids are concatenated, each followed by one separator value that is no
token id (``vocab_size``), so no n-gram matches across two documents. ``pydivsufsort`` sorts
all suffixes of that stream; then the suffixes that start with an n-gram form one contiguous
range of the suffix array, and everything SEAL asks is read from that range:

- ``count(ngram)``: its size, F(n) in the paper;
- ``next_tokens(prefix)``: the distinct tokens right after the prefix in that range (they are
  sorted there, so this is a run-length pass), what constrained decoding may generate next;
- ``docs(ngram)`` / ``positions(ngram)``: where it occurs, mapped to documents through the
  start offset of each document.

The range is found one token at a time: within the range of ``prefix[:i]`` the suffixes are
sorted by their ``i``-th token, so a ``searchsorted`` over that column narrows it. Arrays are
saved as ``.npy`` and opened memory-mapped, so a corpus larger than memory is searched by
reading only the pages a query touches. Building sorts the stream in memory, about 9 bytes a
token; :mod:`cormorant.retrieval.seal.sharded` bounds that by sorting the corpus in shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cormorant.errors import IndexFormatError, MissingExtraError

TOKENS_FILE = "tokens.npy"
SUFFIX_FILE = "suffix_array.npy"
STARTS_FILE = "doc_starts.npy"
FIRST_FILE = "first_token_ranges.npy"
FILES = (TOKENS_FILE, SUFFIX_FILE, STARTS_FILE, FIRST_FILE)


class SuccessorCache:
    """Answers to "which tokens may follow this prefix", kept per prefix: decoding asks the
    same prefixes once per beam and step. Cleared past ``limit`` entries, a bound on memory
    over a long-lived service."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._found: dict[tuple, np.ndarray] = {}

    def get(self, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._found:
            if len(self._found) >= self.limit:
                self._found.clear()
            self._found[key] = np.asarray(compute(), dtype=np.int64)
        return self._found[key]


class NgramIndex(Protocol):
    """What decoding and scoring ask of a corpus: one :class:`SubstringIndex`, or a
    :class:`~cormorant.retrieval.seal.sharded.ShardedIndex` of several."""

    doc_starts: np.ndarray

    @property
    def total_tokens(self) -> int: ...
    def token_counts(self) -> np.ndarray: ...
    def count(self, ngram: Sequence[int]) -> int: ...
    def next_token_array(self, prefix: Sequence[int]) -> np.ndarray: ...
    def next_tokens_at_start(self, prefix: Sequence[int]) -> np.ndarray: ...
    def positions(self, ngram: Sequence[int], limit: int | None = None) -> np.ndarray: ...
    def doc_of(self, positions: np.ndarray) -> np.ndarray: ...
    def document(self, row: int) -> np.ndarray: ...


class SubstringIndex:
    """Counts, successors and documents of any token n-gram of a corpus.

    Example:
        >>> index = SubstringIndex.build([[5, 6, 7], [6, 7, 6]], vocab_size=10)
        >>> index.count([6, 7]), index.next_tokens([6]), index.docs([7, 6])
        (2, [7], [1])
    """

    def __init__(self, tokens: np.ndarray, suffix_array: np.ndarray, doc_starts: np.ndarray,
                 first_ranges: np.ndarray, vocab_size: int) -> None:
        self.tokens, self.suffix_array = tokens, suffix_array
        self.doc_starts = doc_starts
        # first_ranges[t] .. first_ranges[t + 1]: the suffixes that start with token t.
        self.first_ranges = first_ranges
        self.vocab_size = vocab_size
        self._successors = SuccessorCache()

    # ------------------------------------------------------------------ building and files
    @classmethod
    def build(cls, documents: Iterable[Sequence[int]], vocab_size: int) -> SubstringIndex:
        """Index the token ids of each document (in corpus order)."""
        try:
            from pydivsufsort import divsufsort
        except ModuleNotFoundError as exc:
            raise MissingExtraError("the seal retriever", "seal", exc) from None
        parts: list[np.ndarray] = []
        starts = [0]
        separator = np.array([vocab_size], dtype=np.int32)
        for ids in documents:
            array = np.asarray(ids, dtype=np.int32)
            if array.size and (array.min() < 0 or array.max() >= vocab_size):
                raise ValueError(f"token ids must lie in [0, {vocab_size})")
            parts += [array, separator]
            starts.append(starts[-1] + array.size + 1)
        tokens = np.concatenate(parts) if parts else separator.copy()
        suffix_array = np.asarray(divsufsort(tokens), dtype=_index_dtype(tokens.size))
        counts = np.bincount(tokens, minlength=vocab_size + 1)[:vocab_size]
        first = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(counts, out=first[1:])
        return cls(tokens, suffix_array, np.asarray(starts, dtype=np.int64), first, vocab_size)

    def save(self, directory: Path, prefix: str = "") -> dict[str, Any]:
        """Write the arrays as ``.npy`` files (names start with ``prefix``: one index directory
        holds several shards); return what the index's metadata records."""
        for name, array in zip(FILES, (self.tokens, self.suffix_array, self.doc_starts,
                                       self.first_ranges), strict=True):
            np.save(directory / f"{prefix}{name}", np.asarray(array))
        return {"vocab_size": self.vocab_size, "tokens": self.total_tokens,
                "documents": self.num_documents}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], mmap: bool = True,
             prefix: str = "") -> SubstringIndex:
        """Open the arrays :meth:`save` wrote, memory-mapped unless ``mmap`` is false."""
        mode = "r" if mmap else None
        try:
            arrays = [np.load(directory / f"{prefix}{name}", mmap_mode=mode) for name in FILES]
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{directory}: cannot read the suffix array ({exc})") from None
        index = cls(*arrays, vocab_size=int(meta["vocab_size"]))
        if index.num_documents != meta["documents"] or index.total_tokens != meta["tokens"]:
            raise IndexFormatError(f"{directory}: the suffix array does not match its meta.json")
        return index

    # ------------------------------------------------------------------------- queries
    @property
    def num_documents(self) -> int:
        return len(self.doc_starts) - 1

    @property
    def total_tokens(self) -> int:
        """N in the paper: corpus tokens, separators not counted."""
        return int(self.tokens.shape[0]) - self.num_documents

    def range(self, ngram: Sequence[int]) -> tuple[int, int]:
        """[lo, hi) of the suffix array: the suffixes that start with ``ngram``."""
        if len(ngram) == 0:
            return 0, int(self.suffix_array.shape[0])
        first = int(ngram[0])
        if not 0 <= first < self.vocab_size:
            return 0, 0
        lo, hi = int(self.first_ranges[first]), int(self.first_ranges[first + 1])
        for depth in range(1, len(ngram)):
            if lo >= hi:
                break
            # The last stream element is a separator, so a suffix that matched ngram[:depth]
            # (no separators) always has a token at +depth.
            column = self.tokens[np.asarray(self.suffix_array[lo:hi]) + depth]
            token = int(ngram[depth])
            lo, hi = (lo + int(np.searchsorted(column, token, "left")),
                      lo + int(np.searchsorted(column, token, "right")))
        return lo, hi

    def token_counts(self) -> np.ndarray:
        """F of every single token: ``counts[t]`` is how often token ``t`` occurs."""
        return np.diff(self.first_ranges)

    def count(self, ngram: Sequence[int]) -> int:
        """How often ``ngram`` occurs in the corpus (F(n)); the empty n-gram counts 0."""
        if len(ngram) == 0:
            return 0
        lo, hi = self.range(ngram)
        return hi - lo

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        """The distinct token ids that follow ``prefix`` somewhere in the corpus, ascending.

        The empty prefix gives every token that occurs in the corpus.
        """
        return self.next_token_array(prefix).tolist()

    def next_token_array(self, prefix: Sequence[int]) -> np.ndarray:
        """:meth:`next_tokens` as an int64 array (cached: decoding asks for each prefix once
        per beam and step)."""
        key = tuple(int(t) for t in prefix)
        return self._successors.get(key, lambda: self._following(key))

    def _following(self, key: tuple[int, ...]) -> np.ndarray:
        if not key:
            return np.flatnonzero(np.diff(self.first_ranges) > 0)
        lo, hi = self.range(key)
        column = np.asarray(self.tokens[np.asarray(self.suffix_array[lo:hi]) + len(key)])
        # Sorted within the range: the distinct values are where the column changes.
        found = column[np.flatnonzero(np.diff(column, prepend=-1))] if hi > lo else column
        return found[found < self.vocab_size]

    def next_tokens_at_start(self, prefix: Sequence[int]) -> np.ndarray:
        """The distinct tokens that follow ``prefix`` where it opens a document, ascending
        (int64): what title decoding may write next, titles being the documents' first words.

        Example:
            >>> index = SubstringIndex.build([[5, 6, 7], [7, 6, 5]], vocab_size=10)
            >>> index.next_tokens_at_start([]).tolist(), index.next_tokens_at_start([6]).tolist()
            ([5, 7], [])
        """
        ids = tuple(int(t) for t in prefix)
        return self._successors.get(("start", *ids), lambda: self._opening(ids))

    def _opening(self, ids: tuple[int, ...]) -> np.ndarray:
        starts = np.asarray(self.doc_starts[:-1])
        at = starts
        if ids:
            found = self.positions(ids)
            slot = np.minimum(np.searchsorted(starts, found), max(len(starts) - 1, 0))
            at = found[starts[slot] == found] if len(starts) else found[:0]
        following = np.asarray(self.tokens[at + len(ids)]) if at.size else at
        return np.unique(following[following < self.vocab_size])

    def positions(self, ngram: Sequence[int], limit: int | None = None) -> np.ndarray:
        """Stream offsets where ``ngram`` starts (at most ``limit`` of them, in suffix order)."""
        lo, hi = self.range(ngram) if len(ngram) else (0, 0)
        if limit is not None:
            hi = min(hi, lo + limit)
        return np.asarray(self.suffix_array[lo:hi], dtype=np.int64)

    def doc_of(self, positions: np.ndarray) -> np.ndarray:
        """The document (row in corpus order) each stream offset falls in."""
        return np.searchsorted(self.doc_starts, positions, side="right") - 1

    def docs(self, ngram: Sequence[int]) -> list[int]:
        """The documents (rows in corpus order) that contain ``ngram``, ascending."""
        return np.unique(self.doc_of(self.positions(ngram))).tolist()

    def document(self, row: int) -> np.ndarray:
        """The token ids of document ``row``."""
        return np.asarray(self.tokens[self.doc_starts[row]:self.doc_starts[row + 1] - 1])


def _index_dtype(size: int) -> type:
    return np.int32 if size < np.iinfo(np.int32).max else np.int64
