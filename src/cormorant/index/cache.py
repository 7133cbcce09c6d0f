"""On-disk cache of corpus embeddings, keyed by (encoder settings, corpus content).

Encoding is the dominant cost on a CPU, so ``index build``, ``eval``, hard-negative mining and
the benchmarks all share one cache: the second run of anything costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.data.files import publishable_mode
from cormorant.types import Corpus

log = logging.getLogger(__name__)

CHUNK = 16384  # documents encoded per call: bounds memory for corpora larger than RAM


def cache_dir() -> Path:
    """``$CORMORANT_CACHE`` or ``~/.cache/cormorant``."""
    root = os.environ.get("CORMORANT_CACHE") or Path.home() / ".cache" / "cormorant"
    return Path(root)


def cache_key(settings: dict[str, Any], corpus: Corpus) -> str:
    """The entry for (encoder settings, corpus content). With a model fingerprint the model's
    name or path is left out: the same weights under another path (the default model by name
    or by path, a document tower copied beside a trained query tower) share one entry."""
    if "fingerprint" in settings:
        settings = {k: v for k, v in settings.items() if k != "model"}
    payload = json.dumps({"encoder": settings, "corpus": corpus.fingerprint}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def corpus_embeddings(encoder: Any, corpus: Corpus, use_cache: bool = True) -> np.ndarray:
    """Document embeddings of ``corpus`` in corpus order, from the cache when present.

    The result is a read-only memory map when it comes from the cache, so corpora larger than
    memory work. Writes go to a temporary file renamed into place: an interrupted encoding
    never leaves a partial cache entry.
    """
    settings = getattr(encoder, "settings", None)
    if not use_cache or settings is None:
        return _encode_all(encoder, corpus, out_path=None)
    path = cache_dir() / "embeddings" / f"{cache_key(settings, corpus)}.npy"
    if path.is_file():
        try:
            vectors = np.load(path, mmap_mode="r")
            if vectors.shape == (len(corpus), encoder.dim):
                log.info("embeddings from cache %s", path)
                return vectors
        except (ValueError, OSError):
            pass
        log.warning("ignoring unreadable cache entry %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _encode_all(encoder, corpus, out_path=path)


def _encode_all(encoder: Any, corpus: Corpus, out_path: Path | None) -> np.ndarray:
    total = len(corpus)
    if out_path is None:
        out = np.zeros((total, encoder.dim), dtype=np.float32)
        tmp = None
    else:
        fd, tmp_name = tempfile.mkstemp(suffix=".npy.tmp", dir=out_path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                        shape=(total, encoder.dim))
    try:
        start = 0
        for batch in corpus.batches(CHUNK):
            out[start:start + len(batch)] = encoder.encode_documents([d.contents for d in batch])
            start += len(batch)
        if tmp is not None:
            out.flush()
            del out
            os.chmod(tmp, publishable_mode())
            os.replace(tmp, out_path)
            return np.load(out_path, mmap_mode="r")
        return out
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
