"""MS MARCO tsv: ``collection.tsv`` (pid, passage), ``queries.<split>.tsv`` (qid, text) and
``qrels.<split>.tsv`` (TREC form)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cormorant.data.files import find_file, open_text, reject_options
from cormorant.data.trec import read_qrels
from cormorant.errors import DataError
from cormorant.types import Corpus, Dataset, Document, Queries, Split


def read_tsv_pairs(path: Path) -> Iterator[tuple[str, str]]:
    """(id, text) rows of a two-column tab-separated file."""
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError(f"{path}:{line_no}: expected 'id<TAB>text'")
            yield parts[0], parts[-1] if len(parts) == 2 else parts[1]


def read_collection_tsv(path: Path) -> Corpus:
    """Stream an MS MARCO-style collection (``pid<TAB>text`` or ``pid<TAB>title<TAB>text``)."""

    def stream() -> Iterator[Document]:
        with open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 2:
                    yield Document(parts[0], parts[1])
                elif len(parts) == 3:
                    yield Document(parts[0], parts[2], title=parts[1])
                elif parts != [""]:
                    raise DataError(f"{path}:{line_no}: expected 'pid<TAB>text'")

    return Corpus(stream, name=path.parent.name)


class MsMarcoFormat:
    """Loader for MS MARCO-style tsv folders (registered as dataset format ``msmarco``)."""

    name = "msmarco"

    @staticmethod
    def matches(path: str | Path) -> bool:
        path = Path(path)
        return path.is_dir() and find_file(path, "collection.tsv") is not None

    @staticmethod
    def load(path: Path, **options: object) -> Dataset:
        path = Path(path)
        reject_options("MS MARCO", options)
        collection = find_file(path, "collection.tsv")
        if collection is None:
            raise DataError(f"{path} is not an MS MARCO folder: no collection.tsv(.gz)")
        splits = sorted(
            p.name.removeprefix("qrels.").removesuffix(".gz").removesuffix(".tsv")
            for p in path.glob("qrels.*.tsv*")
        )

        def load_split(name: str) -> Split:
            queries_file = find_file(path, f"queries.{name}.tsv")
            if queries_file is None:
                raise DataError(f"{path} has qrels for split {name!r} but no queries.{name}.tsv")
            queries: Queries = dict(read_tsv_pairs(queries_file))
            qrels_file = find_file(path, f"qrels.{name}.tsv")
            assert qrels_file is not None
            qrels = read_qrels(qrels_file)
            return Split({q: queries[q] for q in qrels if q in queries}, qrels)

        return Dataset(path.name, read_collection_tsv(collection), splits, load_split, path)
