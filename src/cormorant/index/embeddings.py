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
from pathlib import Path
from typing import Any

import numpy as np

from cormorant import cache
from cormorant.types import Corpus

log = logging.getLogger(__name__)

KIND = "embeddings"
# Documents per encoder call: bounds memory for corpora larger than RAM. Not smaller for a
# livelier progress bar: sentence-transformers sorts each call's texts by length before
# batching, so another step size pads other batches and moves vectors at float-noise level,
# and every published number was measured with this one.
STEP = 16384


def embeddings_key(settings: dict[str, Any], corpus: Corpus) -> str:
    """The entry for (encoder settings, corpus content). With a model fingerprint the model's
    name or path is left out: the same weights under another path (the default model by name
    or by path, a document tower copied beside a trained query tower) share one entry."""
    if "fingerprint" in settings:
        settings = {k: v for k, v in settings.items() if k != "model"}
    return cache.key({"encoder": settings, "corpus": corpus.fingerprint})


def corpus_embeddings(encoder: Any, corpus: Corpus, use_cache: bool = True) -> np.ndarray:
    """Document embeddings of ``corpus`` in corpus order, from the cache when present.

    The result is a read-only memory map when it comes from the cache, so corpora larger than
    memory work. An interrupted encoding never leaves a cache entry (see :func:`cache.write`).
    """
    settings = getattr(encoder, "settings", None)
    if not use_cache or settings is None:
        return _encode_all(encoder, corpus, out_path=None)
    name = f"{embeddings_key(settings, corpus)}.npy"
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


def _encode_all(encoder: Any, corpus: Corpus, out_path: Path | None) -> np.ndarray:
    """Encode in chunks into memory, or into a memory-mapped ``.npy`` at ``out_path``."""
    shape = (len(corpus), encoder.dim)
    if out_path is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=shape)
    from cormorant.console import progress

    name = Path(str(getattr(encoder, "name", type(encoder).__name__))).name
    start = 0
    with progress(f"encoding {shape[0]:,} documents with {name}", total=shape[0],
                  unit="doc") as bar:
        for batch in corpus.batches(STEP):
            out[start:start + len(batch)] = encoder.encode_documents([d.contents for d in batch])
            start += len(batch)
            bar.update(len(batch))
    if isinstance(out, np.memmap):
        out.flush()
    return out
