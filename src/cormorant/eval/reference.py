"""Published reference numbers shipped with Cormorant, shown beside measured ones in reports."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def _rows() -> list[dict]:
    text = resources.files("cormorant.eval").joinpath("reference.json").read_text()
    return json.loads(text)["rows"]


def published(dataset: str, pipeline: str, measure: str) -> tuple[float, str] | None:
    """The published value and its source for this dataset, pipeline and measure, if any.

    Example:
        >>> published("scifact", "bm25.lucene", "nDCG@10")
        (0.679, 'Pyserini BEIR regressions, BM25 flat')
    """
    for row in _rows():
        if row["dataset"] == dataset.lower() and pipeline in row["pipelines"] \
                and row["measure"] == measure:
            return row["value"], row["source"]
    return None
