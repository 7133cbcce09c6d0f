"""BRIGHT (Su et al., ICLR 2025): reasoning-intensive retrieval.

A BRIGHT domain is its ``examples.jsonl`` (``id``, ``query``, ``gold_ids``, ``gold_ids_long``,
``excluded_ids``, ...) plus a document collection the user points at: JSON lines or parquet
records with ``id`` and ``content``, as the authors publish them (``documents`` or
``long_documents``). The ``reasoning`` and ``gold_answer`` fields are annotations of the gold
answer and are never used as queries.

Each query's ``excluded_ids`` must be removed from its ranking before scoring; they are kept on
the split (``Split.excluded``) and the evaluation harness drops them before truncating the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cormorant.data.files import find_file, iter_jsonl
from cormorant.errors import DataError, MissingExtraError, UnreadableFileError
from cormorant.types import Corpus, Dataset, Document, Split

_NONE = "N/A"  # BRIGHT's sentinel for "no excluded ids"


def _iter_records(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError as exc:
            raise MissingExtraError("reading parquet BRIGHT documents", "bright", exc) from exc
        import pyarrow as pa

        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                yield from batch.to_pylist()
        except pa.ArrowException as exc:  # not parquet, or cut short
            raise UnreadableFileError(f"{path}: not a readable parquet file"
                                      f" ({str(exc).splitlines()[0][:120]})") from None
    else:
        yield from iter_jsonl(path)


def read_bright_documents(path: Path) -> Corpus:
    """Stream a BRIGHT document collection (``id``, ``content``)."""
    if not path.is_file():
        raise DataError(f"BRIGHT documents file not found: {path}")

    def stream() -> Iterator[Document]:
        for record in _iter_records(path):
            if "id" not in record or "content" not in record:
                raise DataError(f"{path}: BRIGHT documents need 'id' and 'content' fields")
            yield Document(str(record["id"]), str(record["content"]))

    return Corpus(stream, name=path.stem)


def read_bright_examples(path: Path, long_documents: bool = False) -> Split:
    """Queries, binary qrels and per-query exclusions from BRIGHT's ``examples.jsonl``."""
    gold_key = "gold_ids_long" if long_documents else "gold_ids"
    queries, qrels, excluded = {}, {}, {}
    for record in iter_jsonl(path):
        missing = {"id", "query", gold_key} - record.keys()
        if missing:
            raise DataError(f"{path}: BRIGHT example lacks {sorted(missing)}")
        qid = str(record["id"])
        queries[qid] = str(record["query"])
        qrels[qid] = {str(doc): 1 for doc in record[gold_key]}
        drop = {str(d) for d in record.get("excluded_ids") or [] if d != _NONE}
        overlap = drop & qrels[qid].keys()
        if overlap:
            raise DataError(f"{path}: query {qid} excludes its own gold document(s) {sorted(overlap)}")
        if drop:
            excluded[qid] = drop
    return Split(queries, qrels, excluded)


class BrightFormat:
    """Loader for a BRIGHT domain folder (registered as dataset format ``bright``).

    Example:
        >>> ds = BrightFormat.load(Path("bright/biology"), documents="documents.jsonl")  # doctest: +SKIP
        >>> ds.split("test").excluded  # doctest: +SKIP
    """

    name = "bright"

    @staticmethod
    def matches(path: str | Path) -> bool:
        path = Path(path)
        return path.is_dir() and find_file(path, "examples.jsonl") is not None

    @staticmethod
    def load(path: Path, documents: str | Path | None = None, long_documents: bool = False) -> Dataset:
        path = Path(path)
        examples = find_file(path, "examples.jsonl")
        if examples is None:
            raise DataError(f"{path} is not a BRIGHT domain folder: no examples.jsonl")
        if documents:
            corpus = read_bright_documents(Path(documents))
        else:
            corpus = _default_documents(path, long_documents)

        def load_split(name: str) -> Split:
            return read_bright_examples(examples, long_documents)

        return Dataset(path.name, corpus, ["test"], load_split, path)


def _default_documents(path: Path, long_documents: bool) -> Corpus:
    """The domain's own documents file, or a corpus that explains it is missing when read
    (so queries and judgments can still be listed and checked without it)."""
    stem = "long_documents" if long_documents else "documents"
    for suffix in (".jsonl", ".jsonl.gz", ".parquet"):
        if (path / f"{stem}{suffix}").is_file():
            return read_bright_documents(path / f"{stem}{suffix}")

    def missing() -> Iterator[Document]:
        raise DataError(f"BRIGHT domain {path} has no {stem}.jsonl or {stem}.parquet; pass the"
                        " documents file the authors publish (--documents PATH)")

    return Corpus(missing, name=path.name)
