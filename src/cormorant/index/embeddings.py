"""Corpus embeddings, encoded once per (encoder settings, corpus content) and kept in the cache.

Encoding is the dominant cost on a CPU, so ``index build``, ``eval``, hard-negative mining and
the benchmarks all share one entry per (encoder, corpus) in :mod:`cormorant.cache` (kind
``embeddings``): the second run of anything costs seconds.

Example:
    >>> vectors = corpus_embeddings(encoder, dataset.corpus)  # doctest: +SKIP
    >>> vectors.shape  # doctest: +SKIP
    (5183, 384)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cormorant import cache
from cormorant.types import Corpus

log = logging.getLogger(__name__)

KIND = "embeddings"
# Documents per encoder call: bounds memory for corpora larger than RAM. Not smaller for a
# livelier progress bar: another step size pads other batches and moves vectors at float-noise
# level, and every published number was measured with this one.
STEP = 16384


def embeddings_key(settings: dict[str, Any], corpus: Corpus) -> str:
    """The entry for (encoder settings, corpus content). With a model fingerprint the model's
    name or path is left out: the same weights under another path (the default model by name
    or by path, a document tower copied beside a trained query tower) share one entry."""
    if "fingerprint" in settings:
        settings = {k: v for k, v in settings.items() if k != "model"}
    return cache.key({"encoder": settings, "corpus": corpus.fingerprint})


def embeddings_name(settings: dict[str, Any], corpus: Corpus) -> str:
    """The cache entry's name (kind ``embeddings``) for ``corpus`` encoded with ``settings``."""
    return f"{embeddings_key(settings, corpus)}.npy"


def corpus_embeddings(encoder: Any, corpus: Corpus, use_cache: bool = True) -> np.ndarray:
    """Document embeddings of ``corpus`` in corpus order, from the cache when present.

    The result is a read-only memory map when it comes from the cache, so corpora larger than
    memory work. An interrupted encoding never leaves a cache entry (see :func:`cache.write`).
    """
    settings = getattr(encoder, "settings", None)
    if not use_cache or settings is None:
        return _encode_all(encoder, corpus, out_path=None)
    name = embeddings_name(settings, corpus)
    path = cache.lookup(KIND, name)
    if path is not None:
        try:
            vectors = np.load(path, mmap_mode="r")
            if vectors.shape == (len(corpus), encoder.dim):
                log.info("embeddings from cache %s", path)
                return vectors
        except (ValueError, OSError):
            pass
        log.warning("ignoring unreadable cache entry %s", path)
    with cache.write(KIND, name) as tmp:
        _encode_all(encoder, corpus, out_path=tmp)
    return np.load(cache.entry(KIND, name), mmap_mode="r")


def read_rows(vectors: np.ndarray, rows: np.ndarray, block: int = STEP) -> np.ndarray:
    """``vectors[rows]`` (``rows`` increasing), from a cached memory map one block of ``block``
    file rows at a time, each block's mapping closed once read: a 384-d row is smaller than a
    page, so one shard's rows, read through one mapping, would leave nearly every page of the
    whole file resident in this process.

    Example:
        >>> read_rows(np.eye(4, dtype=np.float32), np.array([1, 3]))[:, :2].tolist()
        [[0.0, 1.0], [0.0, 0.0]]
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not isinstance(vectors, np.memmap) or vectors.filename is None:
        return np.asarray(vectors[rows], dtype=np.float32)
    count, dim = vectors.shape
    out = np.empty((len(rows), dim), dtype=np.float32)
    starts = np.arange(0, count + block, block)
    bounds = np.searchsorted(rows, starts)
    for start, low, high in zip(starts[:-1].tolist(), bounds[:-1].tolist(), bounds[1:].tolist(),
                                strict=True):
        if low == high:
            continue
        part = np.memmap(vectors.filename, dtype=vectors.dtype, mode="r",
                         offset=vectors.offset + start * dim * vectors.itemsize,
                         shape=(min(block, count - start), dim))
        out[low:high] = part[rows[low:high] - start]
        del part  # unmapped here: its pages leave this process's resident set
    return out


def _encode_all(encoder: Any, corpus: Corpus, out_path: Path | None) -> np.ndarray:
    """Encode in chunks into memory, or into a memory-mapped ``.npy`` at ``out_path``.

    Documents go to the encoder longest first across the whole corpus, not per chunk: a batch
    pads to its longest text, so mixing lengths wastes the work of the padding. A chunk's
    documents are collected by one pass over the (streamed) corpus; a corpus of one chunk
    takes one pass, as before.
    """
    shape = (len(corpus), encoder.dim)
    if out_path is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=shape)
    from cormorant.console import progress

    name = Path(str(getattr(encoder, "name", type(encoder).__name__))).name
    with progress(f"encoding {shape[0]:,} documents with {name}", total=shape[0],
                  unit="doc") as bar:
        for rows, texts in length_sorted_chunks(corpus, STEP):
            out[rows] = encoder.encode_documents(texts)
            bar.update(len(rows))
    if isinstance(out, np.memmap):
        out.flush()
    return out


def length_sorted_chunks(corpus: Corpus, size: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(corpus positions, texts) in chunks of ``size``, longest text first over the corpus.

    Example:
        >>> from cormorant.types import Document
        >>> docs = Corpus.from_documents([Document("a", "xx"), Document("b", "xxxx")])
        >>> [(rows.tolist(), texts) for rows, texts in length_sorted_chunks(docs, 1)]
        [([1], ['xxxx']), ([0], ['xx'])]
    """
    lengths = np.fromiter((len(d.contents) for d in corpus), dtype=np.int64, count=len(corpus))
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), size):
        rows = order[start:start + size]
        wanted = {int(r): i for i, r in enumerate(rows)}
        texts = [""] * len(rows)
        for position, doc in enumerate(corpus):
            if position in wanted:
                texts[wanted[position]] = doc.contents
        yield rows, texts
