"""Dataset loaders: BEIR, BRIGHT, MS MARCO tsv, TREC qrels and runs.

Example:
    >>> from cormorant.data import load_dataset
    >>> ds = load_dataset("../shared/data/scifact")  # doctest: +SKIP
    >>> split = ds.split("test")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cormorant import registry
from cormorant.errors import DataError
from cormorant.types import Dataset

GROUP = "cormorant.datasets"


def load_dataset(path: str | Path, format: str | None = None, **options: Any) -> Dataset:
    """Open the dataset at ``path`` (or ``irds:<id>``); the format is detected unless named.

    Raises:
        DataError: the path does not exist or matches no registered format.
    """
    if format is not None:
        return registry.get(GROUP, format).load(path, **options)
    for name in registry.names(GROUP):
        loader = registry.get(GROUP, name)
        if loader.matches(path):
            return loader.load(path, **options)
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    raise DataError(f"{path} matches no dataset format ({', '.join(registry.names(GROUP))}): "
                    "expected corpus.jsonl, collection.tsv, examples.jsonl or irds:<id>")


@dataclass
class DatasetSpec:
    """Where a dataset lives, with the options its format takes (BRIGHT's documents file).

    Example:
        >>> DatasetSpec(Path("bright/biology"), documents=Path("docs.jsonl")).load()  # doctest: +SKIP
    """

    path: Path
    documents: Path | None = None
    long_documents: bool = False
    # Instructions for this dataset (BRIGHT's instructed baselines have one per domain): given
    # to every stage of an experiment's pipelines that takes them and was not given its own.
    prompts: dict[str, str] = field(default_factory=dict)

    def load(self) -> Dataset:
        options: dict[str, Any] = {}
        if self.documents:
            options["documents"] = self.documents
        if self.long_documents:
            options["long_documents"] = True
        return load_dataset(self.path, **options)
