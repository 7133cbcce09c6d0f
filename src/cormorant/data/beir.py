"""BEIR-format folders: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

Every file may also be gzipped (``corpus.jsonl.gz``), as the demo collection is shipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cormorant.data.files import find_file, iter_jsonl, reject_options
from cormorant.data.trec import read_qrels
from cormorant.errors import DataError
from cormorant.types import Corpus, Dataset, Document, Queries, Split


def read_corpus_jsonl(path: Path, id_key: str = "_id", text_key: str = "text") -> Corpus:
    """Stream documents from a JSON-lines file of ``{"_id", "title", "text", ...}`` records."""

    def stream() -> Iterator[Document]:
        for record in iter_jsonl(path):
            if id_key not in record:
                raise DataError(f"{path}: a record has no {id_key!r} field: {str(record)[:80]}")
            extra = {k: v for k, v in record.items() if k not in (id_key, "title", text_key)}
            yield Document(str(record[id_key]), str(record.get(text_key) or ""),
                           title=str(record.get("title") or ""), fields=extra)

    return Corpus(stream, name=path.parent.name)


def read_queries_jsonl(path: Path) -> Queries:
    """Query id -> text from a JSON-lines file of ``{"_id", "text"}`` records."""
    queries: Queries = {}
    for record in iter_jsonl(path):
        if "_id" not in record or "text" not in record:
            raise DataError(f"{path}: each query needs '_id' and 'text': {str(record)[:80]}")
        queries[str(record["_id"])] = str(record["text"])
    return queries


class BeirFormat:
    """Loader for BEIR folders (registered as dataset format ``beir``)."""

    name = "beir"

    @staticmethod
    def matches(path: str | Path) -> bool:
        path = Path(path)
        return path.is_dir() and find_file(path, "corpus.jsonl") is not None

    @staticmethod
    def load(path: Path, **options: object) -> Dataset:
        path = Path(path)
        reject_options("BEIR", options)
        corpus_file = find_file(path, "corpus.jsonl")
        if corpus_file is None:
            raise DataError(f"{path} is not a BEIR folder: no corpus.jsonl(.gz)")
        queries_file = find_file(path, "queries.jsonl")
        qrels_dir = path / "qrels"
        splits = sorted(
            p.name.removesuffix(".gz").removesuffix(".tsv")
            for p in qrels_dir.glob("*.tsv*")
        ) if qrels_dir.is_dir() else []
        queries_cache: dict[str, Queries] = {}

        def load_split(name: str) -> Split:
            if queries_file is None:
                raise DataError(f"{path} has no queries.jsonl(.gz)")
            if "all" not in queries_cache:
                queries_cache["all"] = read_queries_jsonl(queries_file)
            qrels_file = find_file(qrels_dir, f"{name}.tsv")
            assert qrels_file is not None  # split names come from the files that exist
            qrels = read_qrels(qrels_file)
            all_queries = queries_cache["all"]
            missing = [q for q in qrels if q not in all_queries]
            if missing:
                raise DataError(f"{qrels_file} judges {len(missing)} queries missing from"
                                f" {queries_file.name}, e.g. {missing[0]!r}")
            return Split({q: all_queries[q] for q in qrels}, qrels)

        return Dataset(path.name, read_corpus_jsonl(corpus_file), splits, load_split, path)
