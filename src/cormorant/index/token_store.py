"""Token vectors of a corpus on disk: float16, memory-mapped, one contiguous block per document.

``tokens.f16.npy`` holds every document's token rows back to back and ``offsets.npy`` where
each document starts, so document i is ``tokens[offsets[i]:offsets[i + 1]]`` and a run of
documents is one contiguous slice, which is what batched exact scoring reads.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cormorant.errors import IndexFormatError

TOKENS = "tokens.f16.npy"
OFFSETS = "offsets.npy"


def write_token_store(directory: Path, matrices: Iterable[np.ndarray], dim: int) -> int:
    """Stream per-document token matrices into ``directory``; returns the document count."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "tokens.raw"
    offsets = [0]
    with open(raw, "wb") as handle:
        for matrix in matrices:
            if matrix.ndim != 2 or matrix.shape[1] != dim:
                raise ValueError(f"token matrix of shape {matrix.shape}, expected (n, {dim})")
            handle.write(np.ascontiguousarray(matrix, dtype=np.float16).tobytes())
            offsets.append(offsets[-1] + matrix.shape[0])
    # Re-wrap the raw bytes as an .npy file without loading them: header, then the data.
    count = offsets[-1]
    tokens = np.lib.format.open_memmap(directory / TOKENS, mode="w+", dtype=np.float16,
                                       shape=(count, dim))
    if count:
        tokens[:] = np.memmap(raw, dtype=np.float16, mode="r", shape=(count, dim))
    tokens.flush()
    del tokens
    raw.unlink()
    np.save(directory / OFFSETS, np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1


class TokenStore:
    """Read access to a token store (memory-mapped: corpora larger than memory work).

    Example:
        >>> store = TokenStore.from_matrices([np.ones((2, 4)), np.zeros((1, 4))], dim=4)
        >>> len(store), store.document(1).shape
        (2, (1, 4))
    """

    def __init__(self, directory: Path) -> None:
        try:
            self.tokens = np.load(directory / TOKENS, mmap_mode="r")
            self.offsets = np.load(directory / OFFSETS)
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{directory}: cannot read the token store ({exc})") from None
        if self.offsets[-1] != self.tokens.shape[0]:
            raise IndexFormatError(f"{directory}: token store offsets and rows disagree")

    @classmethod
    def from_matrices(cls, matrices: list[np.ndarray], dim: int) -> TokenStore:
        """A store held in memory: a few written documents, before a commit writes them."""
        store = cls.__new__(cls)
        lengths = [len(m) for m in matrices]
        store.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        store.tokens = (np.concatenate([np.asarray(m, np.float16).reshape(-1, dim)
                                        for m in matrices])
                        if matrices else np.zeros((0, dim), np.float16))
        return store

    @classmethod
    def combined(cls, parts: list[tuple[TokenStore, np.ndarray]]) -> TokenStore:
        """The given documents of each store, in order, as one store held in memory."""
        matrices = []
        for store, rows in parts:
            for row in rows.tolist():
                matrices.append(store.tokens[store.offsets[row]:store.offsets[row + 1]])
        return cls.from_matrices(matrices, parts[0][0].dim)

    def save(self, directory: Path) -> None:
        """Write the store's two files into ``directory``."""
        np.save(directory / TOKENS, np.asarray(self.tokens, dtype=np.float16))
        np.save(directory / OFFSETS, self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    def document(self, index: int) -> np.ndarray:
        """Document ``index``'s token rows as float32."""
        return to_float32(self.tokens[self.offsets[index]:self.offsets[index + 1]])

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Documents ``start..stop-1`` as one float32 matrix, and each one's first row in it."""
        first, last = self.offsets[start], self.offsets[stop]
        return to_float32(self.tokens[first:last]), self.offsets[start:stop] - first

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Documents ``rows`` (any order) as one float32 matrix, and each one's first row in it.

        One fancy-indexed read of the memory map, so re-ranking N candidates is one matrix
        product rather than N small ones.
        """
        rows = np.asarray(rows, dtype=np.int64)
        firsts, lasts = self.offsets[rows], self.offsets[rows + 1]
        lengths = lasts - firsts
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        index = np.repeat(firsts - starts, lengths) + np.arange(int(lengths.sum()))
        return to_float32(self.tokens[index]), starts


def to_float32(half: np.ndarray) -> np.ndarray:
    """``half`` (float16) as float32, through torch's vectorised conversion.

    numpy converts float16 element by element; on the CPUs measured here torch's F16C path was
    about twice as fast, and the conversion, not the matrix product, dominated re-ranking.
    """
    import torch

    with warnings.catch_warnings():  # a memory-mapped (read-only) source is only read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(half)).float().numpy()
