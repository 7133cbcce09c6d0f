"""Checks a dataset's parts against each other and counts them (``cormorant data``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cormorant import registry
from cormorant.data import detect_format
from cormorant.errors import DataError, UnreadableFileError
from cormorant.types import Dataset


@dataclass
class DatasetReport:
    name: str
    format: str
    documents: int
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self, one_line: bool = False) -> str:
        if one_line:
            parts = [f"{n} {c['queries']:,}q/{c['judgments']:,}j" for n, c in self.splits.items()]
            return f"{self.format}, {self.documents:,} documents; " + ", ".join(parts) + \
                (f"; {len(self.problems)} problem(s)" if self.problems else "")
        lines = [f"{self.name} ({self.format}): {self.documents:,} documents"]
        for name, counts in self.splits.items():
            extra = f", {counts['excluded']:,} exclusions" if counts.get("excluded") else ""
            lines.append(f"  {name}: {counts['queries']:,} queries, {counts['judgments']:,}"
                         f" judgments ({counts['relevant']:,} relevant){extra}")
        return "\n".join(lines)


def validate_dataset(dataset: Dataset, examples: int = 3) -> DatasetReport:
    """Count documents and judgments; report ids that do not line up.

    Example:
        >>> print(validate_dataset(load_dataset("data/scifact")).summary())  # doctest: +SKIP
        scifact (beir): 5,183 documents
          test: 300 queries, 339 judgments (339 relevant)
    """
    ids: set[str] = set()
    duplicates: list[str] = []
    missing_corpus = None
    try:
        for doc in dataset.corpus:
            if doc.doc_id in ids:
                duplicates.append(doc.doc_id)
            ids.add(doc.doc_id)
    except UnreadableFileError:
        raise  # a broken file is an error, not a finding about the dataset
    except DataError as exc:  # e.g. a BRIGHT domain without its documents: queries still count
        missing_corpus = str(exc)
    fmt = "irds" if dataset.path is None else detect_format(dataset.path) or "?"
    report = DatasetReport(dataset.name, fmt, len(ids))
    if missing_corpus:
        report.problems.append(f"documents: {missing_corpus}")
    if duplicates:
        report.problems.append(f"{len(duplicates)} duplicate document ids, e.g. {duplicates[0]!r}")
    for name in dataset.split_names:
        split = dataset.split(name)
        judged = [(q, d, r) for q, docs in split.qrels.items() for d, r in docs.items()]
        report.splits[name] = {"queries": len(split.queries), "judgments": len(judged),
                               "relevant": sum(1 for _, _, r in judged if r > 0),
                               "excluded": sum(len(v) for v in split.excluded.values())}
        unknown = [] if missing_corpus else sorted({d for _, d, _ in judged if d not in ids})
        if unknown:
            report.problems.append(f"{name}: {len(unknown)} judged documents are not in the"
                                   f" corpus, e.g. {', '.join(map(repr, unknown[:examples]))}")
        no_text = sorted(q for q in split.qrels if q not in split.queries)
        if no_text:
            report.problems.append(f"{name}: {len(no_text)} judged queries have no text,"
                                   f" e.g. {no_text[0]!r}")
    return report


def find_datasets(roots: list[Path], depth: int = 2) -> Iterator[Path]:
    """Folders under ``roots`` (to ``depth`` levels) that some dataset format recognises."""
    formats = [registry.get("cormorant.datasets", n) for n in registry.names("cormorant.datasets")]
    for root in roots:
        frontier = [root]
        for _ in range(depth + 1):
            next_level = []
            for folder in sorted(frontier):
                if any(f.matches(folder) for f in formats):
                    yield folder
                else:
                    next_level += [p for p in folder.iterdir() if p.is_dir()]
            frontier = next_level
