"""Binary vector indexes: one bit per dimension (the sign), searched by Hamming distance in a
FAISS ``IndexBinaryFlat`` or ``IndexBinaryHNSW``.

32 times smaller than float32 vectors; a first pass whose top candidates the dense stage
re-scores with float query vectors (``dense(precision=binary, rescore=R)``). The interface is
:class:`~cormorant.index.faiss_index.FaissIndex`'s, so segments, writes and merges treat both
alike.

Example:
    >>> import numpy as np
    >>> index = BinaryIndex(dim=8)
    >>> index.add(["a", "b"], np.array([[1] * 8, [-1] * 8], dtype="float32"))
    >>> index.ids[index.search(np.ones((1, 8), dtype="float32"), k=1)[1][0][0]]
    'a'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.errors import CormorantError, IndexFormatError
from cormorant.index.faiss_index import IDS_FILE

INDEX_FILE = "vectors.faissb"
HNSW_NEIGHBOURS = 32
KINDS = ("flat", "hnsw")


def binarize(vectors: np.ndarray) -> np.ndarray:
    """Sign bits packed eight to a byte (sentence-transformers' ``ubinary`` precision)."""
    from sentence_transformers.util import quantize_embeddings

    return np.ascontiguousarray(quantize_embeddings(np.asarray(vectors, dtype=np.float32),
                                                    precision="ubinary"))


class BinaryIndex:
    """Sign bits of vectors with string ids; scores are negated Hamming distances."""

    exact = False  # the float vectors are kept beside it for re-scoring
    needs_training = False
    metric = "hamming"

    def __init__(self, dim: int, kind: str = "flat", ef_search: int = 128, **_: Any) -> None:
        if kind not in KINDS:
            raise CormorantError(f"precision=binary works with index={' or index='.join(KINDS)},"
                                 f" not {kind}")
        if dim % 8:
            raise CormorantError(f"precision=binary needs a dimension divisible by 8, not {dim}")
        self.dim, self.kind, self.ef_search = dim, kind, ef_search
        self.ids: list[str] = []
        self._index = self._new()

    @property
    def factory(self) -> str:
        return "BFlat" if self.kind == "flat" else f"BHNSW{HNSW_NEIGHBOURS}"

    def _new(self) -> Any:
        import faiss

        if self.kind == "flat":
            return faiss.IndexBinaryFlat(self.dim)
        return faiss.IndexBinaryHNSW(self.dim, HNSW_NEIGHBOURS)

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        if len(ids) != len(vectors):
            raise CormorantError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids):
            self._index.add(binarize(vectors))
        self.ids.extend(ids)

    def search(self, vectors: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if not self.ids:
            raise CormorantError("the index is empty")
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = ef_search or self.ef_search
        distances, rows = self._index.search(binarize(vectors), min(k, len(self.ids)))
        return -distances.astype(np.float32), rows

    def empty_like(self) -> BinaryIndex:
        return BinaryIndex(self.dim, self.kind, self.ef_search)

    def template(self) -> BinaryIndex:
        return self.empty_like()

    def reconstruct(self, rows: list[int]) -> np.ndarray:
        raise CormorantError("a binary index keeps only sign bits; its float vectors are kept"
                             " beside it")

    @property
    def nbytes(self) -> int:
        """Bytes the codes take in memory (what a search scans)."""
        return len(self.ids) * self.dim // 8

    def save(self, directory: str | Path) -> dict[str, Any]:
        import faiss

        directory = Path(directory)
        faiss.write_index_binary(self._index, str(directory / INDEX_FILE))
        (directory / IDS_FILE).write_text(json.dumps(self.ids))
        return {"dim": self.dim, "kind": self.kind, "factory": self.factory,
                "metric": self.metric, "count": len(self.ids)}

    @classmethod
    def load(cls, directory: str | Path, meta: dict[str, Any], **params: Any) -> BinaryIndex:
        import faiss

        directory = Path(directory)
        index = cls(meta["dim"], meta["kind"], params.get("ef_search", 128))
        try:
            index._index = faiss.read_index_binary(str(directory / INDEX_FILE))
            index.ids = json.loads((directory / IDS_FILE).read_text())
        except (RuntimeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"{directory}: cannot read the binary index ({exc})") from None
        if index._index.ntotal != len(index.ids):
            raise IndexFormatError(f"{directory}: binary index and id map disagree")
        return index
