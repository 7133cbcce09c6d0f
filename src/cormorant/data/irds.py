"""Anything ``ir_datasets`` can open, when its files are local (extra ``[irds]``).

A dataset is named ``irds:<id>``, e.g. ``irds:beir/scifact/test``. An ``ir_datasets`` id names
one set of queries and judgments; its last component (``test``) is the split name. Machines
here reach no dataset hosts, so the files must already be under ``$IR_DATASETS_HOME``; a
download attempt fails with a message saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cormorant.data.files import reject_options
from cormorant.errors import DataError, MissingExtraError
from cormorant.types import Corpus, Dataset, Document, Split

PREFIX = "irds:"


def _open(dataset_id: str) -> Any:
    try:
        import ir_datasets
    except ModuleNotFoundError as exc:
        raise MissingExtraError("irds: datasets", "irds", exc) from exc
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise DataError(f"ir_datasets knows no dataset {dataset_id!r}") from None


def _local(action: str, dataset_id: str, produce: Any) -> Any:
    """Run ``produce``; a failed download becomes a clear 'files are not local' error."""
    try:
        return produce()
    except (OSError, ConnectionError) as exc:
        raise DataError(f"ir_datasets could not {action} for {dataset_id!r} from local files"
                        f" (no network here; put them under $IR_DATASETS_HOME): {exc}") from None


def read_queries(dataset_id: str) -> dict[str, str]:
    """Every query of an ir_datasets dataset, judged or not (topics for a submission).

    Example:
        >>> read_queries("beir/scifact/test")  # doctest: +SKIP
    """
    source = _open(dataset_id)
    if not source.has_queries():
        raise DataError(f"ir_datasets {dataset_id!r} has no queries")
    return _local("read queries", dataset_id, lambda: {
        str(q.query_id): q.default_text() if hasattr(q, "default_text") else str(q.text)
        for q in source.queries_iter()})


def _document(doc: Any) -> Document:
    title = getattr(doc, "title", "") or ""
    text = getattr(doc, "text", None)
    if text is None:
        text = doc.default_text() if hasattr(doc, "default_text") else str(doc)
    return Document(str(doc.doc_id), str(text), title=str(title))


class IrDatasetsFormat:
    """Loader for ``irds:<id>`` (registered as dataset format ``irds``).

    Example:
        >>> ds = load_dataset("irds:beir/scifact/test")  # doctest: +SKIP
        >>> ds.split("test").qrels  # doctest: +SKIP
    """

    name = "irds"

    @staticmethod
    def matches(path: str | Path) -> bool:
        return str(path).startswith(PREFIX)

    @staticmethod
    def load(path: str | Path, **options: object) -> Dataset:
        reject_options("ir_datasets", options)
        dataset_id = str(path)[len(PREFIX):]
        source = _open(dataset_id)
        if not source.has_docs():
            raise DataError(f"ir_datasets {dataset_id!r} has no documents")

        def stream() -> Iterator[Document]:
            yield from _local("read documents", dataset_id,
                              lambda: [_document(d) for d in source.docs_iter()])

        splits = [dataset_id.rsplit("/", 1)[-1]] if source.has_queries() and source.has_qrels() \
            else []

        def load_split(name: str) -> Split:
            queries = read_queries(dataset_id)
            qrels: dict[str, dict[str, int]] = {}
            for qrel in _local("read judgments", dataset_id, lambda: list(source.qrels_iter())):
                qrels.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
            return Split({q: queries[q] for q in qrels if q in queries}, qrels)

        name = dataset_id.replace("/", "-")
        return Dataset(name, Corpus(stream, name=name), splits, load_split, None)
