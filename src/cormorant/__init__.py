"""Cormorant: dense retrieval and ranking.

Importing the package is cheap: torch, FAISS, Java and FastAPI load only when a part that needs
them is used. The everyday functions are importable from the top (each loads its module on
first use):

Example:
    >>> from cormorant import build_pipeline, evaluate, load_dataset, open_index
    >>> ds = load_dataset("data/scifact")  # doctest: +SKIP
    >>> pipe = build_pipeline("rrf(bm25, dense)", ds.corpus)  # doctest: +SKIP
    >>> evaluate(pipe.search(ds.split("test").queries, k=1000), ds.split("test").qrels)  # doctest: +SKIP
    Evaluation(nDCG@10=0.7149, RR@10=..., R@100=...; 300 queries)
    >>> open_index("indexes/scifact").pipeline.search("vitamin d", k=10)  # doctest: +SKIP
"""

from typing import Any

from cormorant.errors import CormorantError
from cormorant.types import Corpus, Dataset, Document, Qrels, Queries, Run

__version__ = "0.1.0"

_LAZY = {
    "build_pipeline": "cormorant.retrieval.assemble",
    "open_index": "cormorant.retrieval.assemble",
    "save_index": "cormorant.retrieval.assemble",
    "evaluate": "cormorant.eval.measures",
    "load_dataset": "cormorant.data",
    "read_topics": "cormorant.data.topics",
    "fuse": "cormorant.fusion",
}

__all__ = ["CormorantError", "Corpus", "Dataset", "Document", "Qrels", "Queries", "Run", *_LAZY]


def __getattr__(name: str) -> Any:
    # PEP 562: the function's module (and what it imports) loads on first use, not with the package.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cormorant' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
