"""FAISS vector indexes: flat, IVF, HNSW, IVF-PQ and fast-scan PQ, inner product or L2, CPU
or GPU.

The index knows vectors and their string ids, never text. Shortcuts (``flat``, ``hnsw``,
``ivf``, ``ivfpq``, ``pqfs``) pick sound parameters from the collection size; any FAISS
factory string (``"IVF1024,PQ48x8"``) is accepted as is.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.errors import CormorantError, IndexFormatError

log = logging.getLogger(__name__)

METRICS = {"ip": "METRIC_INNER_PRODUCT", "l2": "METRIC_L2"}
INDEX_FILE = "vectors.faiss"
RETRAIN_GROWTH = 4
"""A merge retrains a trained kind (IVF, PQ) once the collection is this many times the size
it was trained on (docs/benchmarks.md measures recall before and after)."""
IDS_FILE = "ids.json"
TRAIN_SAMPLE = 160_000
"""Vectors a sharded build trains shared IVF centroids / PQ codebooks on, at most: 40 per list
at a million documents' 4,000 lists (FAISS asks for 39), a fraction of the collection."""


def _faiss() -> Any:
    import faiss  # heavy; imported only when an index is used

    return faiss


def factory_string(kind: str, count: int, dim: int) -> str:
    """Resolve a shortcut to a FAISS factory string sized for ``count`` vectors of ``dim``."""
    # IVF needs at least as many training vectors as lists (a small index built, then grown).
    nlist = max(1, min(65536, int(4 * math.sqrt(max(count, 1))), count))
    # PQ needs a sub-quantizer count that divides the dimension; 8 dims per code byte is the
    # usual speed/recall balance.
    pq_m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m >= 1 and dim % m == 0)
    # Fast-scan PQ: 4-bit codes over 4 dims each (half a byte per 4 dims), scanned with SIMD
    # lookups; it trains in seconds where 8-bit PQ over thousands of dims takes minutes.
    fs_m = next(m for m in (dim // 4, dim // 2, dim) if m >= 1 and dim % m == 0)
    shortcuts = {"flat": "Flat", "hnsw": "HNSW32", "ivf": f"IVF{nlist},Flat",
                 "ivfpq": f"IVF{nlist},PQ{pq_m}x8np",  # np: skip polysemous training, unused
                 "pqfs": f"PQ{fs_m}x4fs"}
    return shortcuts.get(kind.lower(), kind)


def sample_rows(count: int, size: int, seed: int = 0) -> np.ndarray:
    """``size`` of ``count`` rows drawn with ``seed``, in increasing order (every row when
    ``count`` is no more than ``size``, so a small collection trains on all of it, in order,
    as a build of the whole index does).

    Example:
        >>> sample_rows(5, 10).tolist(), len(sample_rows(1000, 10))
        ([0, 1, 2, 3, 4], 10)
    """
    if count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


class FaissIndex:
    """Vectors with string ids in a FAISS index.

    Example:
        >>> import numpy as np
        >>> index = FaissIndex(dim=4, kind="flat", metric="ip")
        >>> index.add(["a", "b"], np.eye(2, 4, dtype="float32"))
        >>> scores, rows = index.search(np.array([[0, 1, 0, 0]], dtype="float32"), k=1)
        >>> index.ids[rows[0][0]]
        'b'
    """

    def __init__(self, dim: int, kind: str = "flat", metric: str = "ip",
                 nprobe: int = 32, ef_search: int = 128, ef_construction: int = 200,
                 use_gpu: bool | None = None, expected_count: int | None = None) -> None:
        if metric not in METRICS:
            raise CormorantError(f"unknown metric {metric!r}; use one of {sorted(METRICS)}")
        self.dim, self.kind, self.metric = dim, kind, metric
        self.nprobe, self.ef_search, self.ef_construction = nprobe, ef_search, ef_construction
        self.use_gpu = use_gpu
        # Vectors added in blocks: shortcuts are sized for the whole collection, not the first
        # block (which a trained kind learns from).
        self.expected_count = expected_count
        self.ids: list[str] = []
        self._built_factory: str | None = None
        self._index: Any = None
        self._search_index: Any = None
        self._template: FaissIndex | None = None

    @property
    def factory(self) -> str:
        """The factory string the index was built from (or would be, sized for its ids)."""
        return self._built_factory or factory_string(self.kind, len(self.ids), self.dim)

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        """Add vectors (rows) under ``ids``. The first call of a trained kind trains on them."""
        vectors = self._check(vectors)
        if len(ids) != vectors.shape[0]:
            raise CormorantError(f"{len(ids)} ids for {vectors.shape[0]} vectors")
        if self._index is None:
            self.train(vectors)
        self._index.add(vectors)
        self.ids.extend(ids)
        self._search_index = None

    def train(self, vectors: np.ndarray) -> None:
        """Build the index, sized for ``expected_count`` (else for ``vectors``), and train a
        trained kind on ``vectors`` without adding them: what the shards of a sharded index
        share, learnt once from a sample (see :func:`sample_rows`).

        Example:
            >>> index = FaissIndex(dim=8, kind="IVF2,Flat", expected_count=1000)
            >>> index.train(np.random.default_rng(0).standard_normal((64, 8)).astype("float32"))
            >>> len(index.ids), index.empty_like().factory
            (0, 'IVF2,Flat')
        """
        vectors = self._check(vectors)
        faiss = _faiss()
        factory = factory_string(self.kind, self.expected_count or vectors.shape[0], self.dim)
        try:
            self._index = faiss.index_factory(self.dim, factory, getattr(faiss, METRICS[self.metric]))
        except RuntimeError as exc:
            raise CormorantError(f"FAISS cannot build index {factory!r}: {exc}") from None
        self._built_factory = factory
        hnsw = getattr(faiss.downcast_index(self._index), "hnsw", None)
        if hnsw is not None:
            # FAISS's default of 40 builds graphs that miss ~10% of the true top-10 on
            # clustered embeddings; 200 costs build time once and recovers it.
            hnsw.efConstruction = self.ef_construction
        if not self._index.is_trained:
            log.info("training %s on %d vectors", factory, vectors.shape[0])
            self._index.train(vectors)

    def __getstate__(self) -> dict[str, Any]:
        # A trained template travels to a Ray shard task: FAISS's own bytes, not its handle.
        state = {**self.__dict__, "_search_index": None, "_template": None}
        if self._index is not None:
            state["_index"] = _faiss().serialize_index(self._index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["_index"] is not None:
            state = {**state, "_index": _faiss().deserialize_index(state["_index"])}
        self.__dict__.update(state)

    def search(self, vectors: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows for each query vector: (scores, row positions), -1 where none.

        For ``l2`` the score is the negated squared distance, so higher is always better.
        ``nprobe``/``ef_search`` apply to this call only (copies of a stage with other
        settings share one index).
        """
        if self._index is None or not self.ids:
            raise CormorantError("the index is empty")
        vectors = self._check(vectors)
        k = min(k, len(self.ids))
        params = self._call_params(nprobe, ef_search)
        searcher = self._searcher()
        if params is not None and searcher is self._index:
            scores, rows = searcher.search(vectors, k, params=params)
        else:
            scores, rows = searcher.search(vectors, k)
        if self.metric == "l2":
            scores = -scores
        return scores, rows

    def _call_params(self, nprobe: int | None, ef_search: int | None) -> Any:
        """FAISS search parameters for one call, where the index's top level takes them."""
        faiss = _faiss()
        top = faiss.downcast_index(self._index)
        if nprobe is not None and isinstance(top, faiss.IndexIVF):
            return faiss.SearchParametersIVF(nprobe=min(nprobe, top.nlist))
        if ef_search is not None and isinstance(top, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(efSearch=ef_search)
        return None

    def empty_like(self) -> FaissIndex:
        """An empty index of the same kind that shares nothing with this one but what it was
        trained on (IVF centroids, PQ codebooks): new documents are coded as these were."""
        faiss = _faiss()
        empty = FaissIndex(self.dim, self.kind, self.metric, self.nprobe, self.ef_search,
                           self.ef_construction, self.use_gpu)
        if self._index is not None:
            fresh = faiss.index_factory(self.dim, self.factory, getattr(faiss, METRICS[self.metric]))
            if fresh.is_trained:  # nothing learned from data (flat, HNSW): a new one
                hnsw = getattr(faiss.downcast_index(fresh), "hnsw", None)
                if hnsw is not None:
                    hnsw.efConstruction = self.ef_construction
                empty._index = fresh
            else:
                clone = faiss.clone_index(self._index)
                clone.reset()
                empty._index = clone
            empty._built_factory = self.factory
        return empty

    def template(self) -> FaissIndex:
        """:meth:`empty_like`, made once: new segments are copies of it (cheap: it is empty)."""
        if self._template is None:
            self._template = self.empty_like()
        return self._template.empty_like()

    @property
    def needs_training(self) -> bool:
        """Whether this kind learns from data (IVF centroids, PQ codebooks)."""
        faiss = _faiss()
        return not faiss.index_factory(self.dim, self.factory,
                                       getattr(faiss, METRICS[self.metric])).is_trained

    @property
    def exact(self) -> bool:
        """Whether :meth:`reconstruct` returns the added vectors exactly (flat, HNSW, IVF-flat)
        rather than decoded codes (PQ, scalar quantizers)."""
        trial = self.empty_like()
        if trial._index is None:
            return True  # nothing built yet: nothing to lose
        probe = np.random.default_rng(0).standard_normal((4, self.dim)).astype(np.float32)
        trial.add([str(i) for i in range(4)], probe)
        try:
            return bool(np.array_equal(trial.reconstruct([0, 1, 2, 3]), probe))
        except CormorantError:
            return False

    @property
    def nbytes(self) -> int:
        """Bytes of the index as FAISS writes it (codes and structure, no ids)."""
        return 0 if self._index is None else int(_faiss().serialize_index(self._index).nbytes)

    def reconstruct(self, rows: list[int]) -> np.ndarray:
        """The stored vectors at ``rows`` (decoded codes for PQ kinds).

        Raises:
            CormorantError: this kind cannot give its vectors back.
        """
        faiss = _faiss()
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
            ivf.make_direct_map()  # IVF lists know no row order until asked to
        try:
            return self._index.reconstruct_batch(np.asarray(rows, dtype=np.int64))
        except RuntimeError:
            raise CormorantError(f"a {self.kind} FAISS index keeps no exact vectors to read"
                                 " back; build it with index=flat") from None

    def _searcher(self) -> Any:
        if self._search_index is None:
            faiss = _faiss()
            index = self._index
            self._set_search_params(index)
            if self._gpu_wanted():
                try:
                    index = faiss.index_cpu_to_all_gpus(index)
                    log.info("searching on %d GPU(s)", faiss.get_num_gpus())
                except (RuntimeError, AttributeError) as exc:  # e.g. HNSW has no GPU version
                    log.warning("kept %s on the CPU: %s", self.factory, exc)
            self._search_index = index
        return self._search_index

    def _gpu_wanted(self) -> bool:
        faiss = _faiss()
        has_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
        return has_gpu if self.use_gpu is None else (self.use_gpu and has_gpu)

    def _set_search_params(self, index: Any) -> None:
        faiss = _faiss()
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = min(self.nprobe, ivf.nlist)
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is not None:
            hnsw.efSearch = self.ef_search

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise CormorantError(f"expected vectors of dimension {self.dim}, got shape {vectors.shape}")
        return vectors

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the FAISS file and id map into ``directory``; returns the meta to record."""
        directory = Path(directory)
        _faiss().write_index(self._index, str(directory / INDEX_FILE))
        (directory / IDS_FILE).write_text(json.dumps(self.ids))
        return {"dim": self.dim, "kind": self.kind, "factory": self.factory,
                "metric": self.metric, "count": len(self.ids)}

    @classmethod
    def load(cls, directory: str | Path, meta: dict[str, Any], **params: Any) -> FaissIndex:
        """Read an index saved by :meth:`save` (checksums already verified by the caller)."""
        directory = Path(directory)
        index = cls(dim=meta["dim"], kind=meta["kind"], metric=meta["metric"], **params)
        try:
            index._index = _faiss().read_index(str(directory / INDEX_FILE))
            index.ids = json.loads((directory / IDS_FILE).read_text())
            index._built_factory = meta.get("factory")
        except (RuntimeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"{directory}: cannot read the vector index ({exc})") from None
        if index._index.ntotal != len(index.ids) or index._index.d != index.dim:
            raise IndexFormatError(f"{directory}: vector index and id map disagree")
        return index
