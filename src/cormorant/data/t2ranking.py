"""T2Ranking (THUIR, SIGIR 2023), a Chinese passage-ranking benchmark, in its published layout.

The folder ``data/`` of the Hugging Face dataset ``THUIR/T2Ranking`` holds tab-separated files,
each with a header row:

- ``collection.tsv``: ``pid<TAB>text`` (2,303,643 passages);
- ``queries.{train,dev,test}.tsv``: ``qid<TAB>text``;
- ``qrels.{train,dev}.tsv``: graded judgments for re-ranking, TREC form (``qid 0 pid rel``),
  relevance 0 to 3;
- ``qrels.retrieval.{train,dev}.tsv``: ``qid<TAB>pid``, the passages that count as relevant
  for first-stage retrieval (no grade: read as 1).

Each qrels file is a split: ``dev`` keeps the grades (nDCG uses them; a recall or RR measure
counts a grade of 1 or more as relevant unless told otherwise, e.g. ``R(rel=2)@100``), and
``retrieval.dev`` is the binary retrieval set the T2Ranking paper's recall and MRR use. A split
takes the queries of ``queries.<name>.tsv`` (``retrieval.dev``: ``queries.dev.tsv``); the test
queries have no published judgments, so they are no split. Rows are read the way the
authors' own code reads them (``quoting=3``: no quote characters), and a file may be gzipped.

The folder also matches the MS MARCO format (``collection.tsv``); this format ``refines`` it,
so detection picks T2Ranking, whose header rows the MS MARCO reader would take for a passage.

Example:
    >>> ds = load_dataset("T2Ranking/data")  # doctest: +SKIP
    >>> ds.split("dev").qrels["100"]  # doctest: +SKIP
    {'0': 3, '2': 1}
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from cormorant.data.files import find_file, open_text, reject_options
from cormorant.data.trec import read_qrels
from cormorant.errors import DataError
from cormorant.types import Corpus, Dataset, Document, Qrels, Queries, Split

RETRIEVAL = "retrieval."
"""Prefix of the splits whose judgments are T2Ranking's binary retrieval qrels."""
_HEADER_IDS = ("pid", "qid")


def read_rows(path: Path, what: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, two tab-separated fields) of a T2Ranking file, its header row skipped.

    The second field is the rest of the line, tabs included (a passage is never cut short).

    Raises:
        DataError: a line that is not ``id<TAB>value``, naming the file and line.
    """
    with open_text(path) as lines:
        for line_no, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t", 1)
            if line_no == 1 and fields[0].strip().lower() in _HEADER_IDS:
                continue
            if len(fields) != 2 or not fields[0].strip():
                raise DataError(f"{path}:{line_no}: expected '{what}' (tab-separated),"
                                f" got {line[:60]!r}")
            yield line_no, [fields[0].strip(), fields[1]]


def read_collection(path: Path) -> Corpus:
    """Stream ``collection.tsv`` (``pid<TAB>text``) as documents with no title."""

    def stream() -> Iterator[Document]:
        for _, (pid, text) in read_rows(path, "pid<TAB>text"):
            yield Document(pid, text)

    return Corpus(stream, name=path.parent.name)


def read_queries(path: Path) -> Queries:
    """Query id -> text from ``queries.<split>.tsv``."""
    return {qid: text for _, (qid, text) in read_rows(path, "qid<TAB>text")}


def read_retrieval_qrels(path: Path) -> Qrels:
    """``qrels.retrieval.<split>.tsv`` (``qid<TAB>pid``): each pair relevant, grade 1."""
    qrels: Qrels = {}
    for line_no, (qid, pid) in read_rows(path, "qid<TAB>pid"):
        pid = pid.strip()
        if not pid or "\t" in pid:
            raise DataError(f"{path}:{line_no}: expected 'qid<TAB>pid', got more fields")
        qrels.setdefault(qid, {})[pid] = 1
    return qrels


def _header(path: Path) -> str:
    """The first line of ``path`` (one line read, however large the file)."""
    with open_text(path) as lines:
        return next(iter(lines), "")


class T2RankingFormat:
    """Loader for T2Ranking folders (registered as dataset format ``t2ranking``)."""

    name = "t2ranking"
    refines: ClassVar[str] = "msmarco"
    """A folder both formats match is this one's (see the module docstring)."""

    @staticmethod
    def matches(path: str | Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        collection = find_file(path, "collection.tsv")
        if collection is None:
            return False
        if any(path.glob(f"qrels.{RETRIEVAL}*.tsv*")):
            return True
        try:
            return _header(collection).split("\t", 1)[0].strip().lower() == "pid"
        except DataError:
            return False  # unreadable: the MS MARCO loader reports it

    @staticmethod
    def load(path: Path, **options: object) -> Dataset:
        path = Path(path)
        reject_options("T2Ranking", options)
        collection = find_file(path, "collection.tsv")
        if collection is None:
            raise DataError(f"{path} is not a T2Ranking folder: no collection.tsv(.gz)")
        splits = sorted(p.name.removeprefix("qrels.").removesuffix(".gz").removesuffix(".tsv")
                        for p in path.glob("qrels.*.tsv*"))

        def load_split(name: str) -> Split:
            asked = name.removeprefix(RETRIEVAL)
            queries_file = find_file(path, f"queries.{asked}.tsv")
            if queries_file is None:
                raise DataError(f"{path} has qrels for split {name!r} but no queries.{asked}.tsv")
            qrels_file = find_file(path, f"qrels.{name}.tsv")
            assert qrels_file is not None  # split names come from the files that exist
            qrels = read_retrieval_qrels(qrels_file) if name.startswith(RETRIEVAL) \
                else read_qrels(qrels_file)
            queries = read_queries(queries_file)
            missing = [q for q in qrels if q not in queries]
            if missing:
                raise DataError(f"{qrels_file} judges {len(missing)} queries missing from"
                                f" {queries_file.name}, e.g. {missing[0]!r}")
            return Split({q: queries[q] for q in qrels}, qrels)

        return Dataset(path.name, read_collection(collection), splits, load_split, path)
