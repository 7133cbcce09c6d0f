"""Cormorant: dense retrieval and ranking.

Importing the package is cheap: torch, FAISS, Java and FastAPI load only when a part that needs
them is used.

Example:
    >>> import cormorant
    >>> from cormorant.data import load_dataset  # doctest: +SKIP
    >>> from cormorant.retrieval.assemble import build_pipeline  # doctest: +SKIP
    >>> ds = load_dataset("data/scifact")  # doctest: +SKIP
    >>> build_pipeline("rrf(bm25, dense)", ds.corpus).search("vitamin d", k=10)  # doctest: +SKIP
"""

from cormorant.errors import CormorantError
from cormorant.types import Corpus, Dataset, Document, Qrels, Queries, Run

__version__ = "0.1.0"
__all__ = ["CormorantError", "Corpus", "Dataset", "Document", "Qrels", "Queries", "Run"]
