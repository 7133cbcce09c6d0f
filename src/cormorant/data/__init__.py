"""Dataset loaders: BEIR, BRIGHT, MS MARCO tsv, T2Ranking, TREC qrels and runs.

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
    name = detect_format(path)
    if name is not None:
        return registry.get(GROUP, name).load(path, **options)
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    raise DataError(f"{path} matches no dataset format ({', '.join(registry.names(GROUP))}): "
                    "expected corpus.jsonl, collection.tsv, examples.jsonl or irds:<id>")


def detect_format(path: str | Path) -> str | None:
    """The name of the dataset format of ``path``, or None when no format matches.

    Where several match, a format that ``refines`` another (a class attribute naming it: a
    T2Ranking folder is also an MS MARCO-style folder) is chosen over the one it refines.

    Example:
        >>> detect_format("../shared/data/scifact")  # doctest: +SKIP
        'beir'
    """
    matched = [n for n in registry.names(GROUP) if registry.get(GROUP, n).matches(path)]
    refined = {getattr(registry.get(GROUP, n), "refines", None) for n in matched}
    chosen = [n for n in matched if n not in refined]
    return chosen[0] if chosen else None


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
