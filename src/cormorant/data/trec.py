"""TREC qrels and run files."""

from __future__ import annotations

import math
from pathlib import Path

from cormorant.data.files import atomic_write, open_text
from cormorant.errors import DataError
from cormorant.types import Qrels, Run


def read_qrels(path: str | Path) -> Qrels:
    """Read qrels in TREC (``qid iter docid rel``) or BEIR tsv (``query-id corpus-id score``) form.

    Example:
        >>> qrels = read_qrels("qrels/test.tsv")  # doctest: +SKIP
    """
    qrels: Qrels = {}
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if line_no == 1 and parts[0] in ("query-id", "query_id", "qid"):
                continue  # BEIR header
            if len(parts) == 4:
                qid, _, docid, rel = parts
            elif len(parts) == 3:
                qid, docid, rel = parts
            else:
                raise DataError(
                    f"{path}:{line_no}: expected 'qid 0 docid relevance' or 'qid docid relevance',"
                    f" got {len(parts)} fields"
                )
            try:
                qrels.setdefault(qid, {})[docid] = int(float(rel))
            except (ValueError, OverflowError):  # 'abc', 'nan', 'inf'
                raise DataError(f"{path}:{line_no}: relevance {rel!r} is not a finite number"
                                ) from None
    return qrels


def write_qrels(qrels: Qrels, path: str | Path) -> None:
    """Write qrels in TREC form, atomically."""
    with atomic_write(path) as out:
        for qid in sorted(qrels):
            for docid, rel in sorted(qrels[qid].items()):
                out.write(f"{qid} 0 {docid} {rel}\n")


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file (``qid Q0 docid rank score tag``)."""
    run = Run()
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(f"{path}:{line_no}: expected 6 fields"
                                f" 'qid Q0 docid rank score tag', got {len(parts)}")
            qid, _, docid, _, score, _ = parts
            value = _float(score)
            if value is None:
                raise DataError(f"{path}:{line_no}: score {score!r} is not a finite number")
            run.setdefault(qid, {})[docid] = value
    return run


def write_trec_run(run: Run, path: str | Path, tag: str = "cormorant") -> None:
    """Write a TREC run file, ranks from 1 by decreasing score, atomically."""
    if any(ch.isspace() for ch in tag) or not tag:
        raise DataError(f"run tag must be one word, got {tag!r}")
    with atomic_write(path) as out:
        for qid in sorted(run):
            for rank, (docid, score) in enumerate(run.ranked(qid), start=1):
                out.write(f"{qid} Q0 {docid} {rank} {score:.9g} {tag}\n")  # float32-exact


def _float(text: str) -> float | None:
    """``text`` as a finite float, else ``None`` (an infinite score cannot be ranked)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
