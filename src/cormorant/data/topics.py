"""Topics (queries to search, judged or not) from the files IR toolkits pass around.

``read_topics(source, split=None)`` takes:

- a ``.tsv`` / ``.txt`` file of ``query_id<TAB>text`` lines (Pyserini's and MS MARCO's topics);
- a ``.jsonl`` file of objects with an id (``_id``, ``query_id``, ``qid`` or ``id``) and a text
  (``text``, ``query`` or ``title``): BEIR's ``queries.jsonl`` and ir_datasets exports;
- a TREC topics file (``<top> <num> Number: 301 <title> ...``), reading each title;
- a dataset folder (BEIR, MS MARCO, BRIGHT): every query of ``queries.jsonl``, or only the
  queries of ``split`` when one is named;
- ``irds:<id>``: the queries of an ir_datasets dataset.

Any of them may be gzipped.

Example:
    >>> read_topics("../shared/data/scifact", split="test")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path

from cormorant.data.files import find_file, iter_jsonl, open_text
from cormorant.errors import DataError
from cormorant.types import Queries

ID_KEYS = ("_id", "query_id", "qid", "id")
TEXT_KEYS = ("text", "query", "title")


def read_topics(source: str | Path, split: str | None = None) -> Queries:
    """The queries in ``source`` (see the module's docstring), in file order.

    Raises:
        DataError: the source is missing, empty or malformed (naming the file and line).
    """
    text = str(source)
    if text.startswith("irds:"):
        return _irds(text, split)
    path = Path(source)
    if path.is_dir():
        return _folder(path, split)
    if split is not None:
        raise DataError(f"--split picks a dataset's queries; {path} is a topics file")
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        queries = _jsonl(path)
    elif _looks_like_trec(path):
        queries = _trec(path)
    else:
        queries = _tsv(path)
    if not queries:
        raise DataError(f"{path}: no queries")
    return queries


def _irds(source: str, split: str | None) -> Queries:
    from cormorant.data import load_dataset
    from cormorant.data.irds import read_queries

    if split is None:
        return read_queries(source.removeprefix("irds:"))
    return load_dataset(source).split(split).queries


def _folder(path: Path, split: str | None) -> Queries:
    from cormorant.data import load_dataset

    if split is not None:
        return load_dataset(path).split(split).queries
    queries_file = find_file(path, "queries.jsonl")
    if queries_file is None:
        raise DataError(f"{path} has no queries.jsonl; name a split with --split")
    return _jsonl(queries_file)


def _jsonl(path: Path) -> Queries:
    queries: Queries = {}
    for line_no, record in enumerate(iter_jsonl(path), start=1):
        qid = next((record[k] for k in ID_KEYS if k in record), None)
        text = next((record[k] for k in TEXT_KEYS if k in record), None)
        if qid is None or not isinstance(text, str):
            raise DataError(f"{path}: record {line_no} needs an id ({', '.join(ID_KEYS)}) and a"
                            f" text ({', '.join(TEXT_KEYS)})")
        queries[str(qid)] = text
    return queries


def _tsv(path: Path) -> Queries:
    queries: Queries = {}
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            qid, sep, text = line.partition("\t")
            if not sep or not qid.strip() or not text.strip():
                raise DataError(f"{path}:{line_no}: expected 'query_id<TAB>text'")
            queries[qid.strip()] = text.strip()
    return queries


def _looks_like_trec(path: Path) -> bool:
    with open_text(path) as handle:
        return handle.read(4096).lstrip().startswith("<top>")


_TOPIC = re.compile(r"<top>(.*?)</top>", re.S)
_NUM = re.compile(r"<num>\s*(?:Number:)?\s*([^\s<]+)", re.I)
_TITLE = re.compile(r"<title>\s*(?:Topic:)?\s*(.*?)\s*(?=<|\Z)", re.I | re.S)


def _trec(path: Path) -> Queries:
    with open_text(path) as handle:
        content = handle.read()
    queries: Queries = {}
    for number, block in enumerate(_TOPIC.findall(content), start=1):
        num, title = _NUM.search(block), _TITLE.search(block)
        if not num or not title or not title.group(1).strip():
            raise DataError(f"{path}: topic {number} needs <num> and <title>")
        queries[num.group(1)] = " ".join(title.group(1).split())
    return queries
