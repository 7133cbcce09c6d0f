"""On-disk cache of evaluation runs, keyed by what decides them.

A run is fixed by the corpus content, the split's queries (and exclusions), the pipeline string,
each stage's identity (a dense stage's model fingerprint) and the depth. Re-running a report
over the same systems reads the runs back instead of rebuilding indexes and searching again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cormorant.data.files import atomic_write
from cormorant.index.cache import cache_dir
from cormorant.types import Dataset, Run, Split


def run_key(dataset: Dataset, split_name: str, split: Split, pipeline_identity: Any,
            depth: int) -> str:
    """A stable hash of everything that decides a run."""
    queries = hashlib.sha256(json.dumps(sorted(split.queries.items())).encode()).hexdigest()
    excluded = sorted((q, sorted(d)) for q, d in split.excluded.items())
    from cormorant import __version__

    # The version is part of the key: a new release may rank differently for the same input.
    payload = {"version": __version__, "corpus": dataset.corpus.fingerprint,
               "split": split_name, "queries": queries, "excluded": excluded,
               "pipeline": pipeline_identity, "depth": depth}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class RunCache:
    """TREC runs plus their timing, under ``$CORMORANT_CACHE/runs``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "runs"

    def get(self, key: str) -> tuple[Run, dict[str, float]] | None:
        trec, meta = self.root / f"{key}.trec", self.root / f"{key}.json"
        if not (trec.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text())
            run = Run.from_trec(trec)
        except (ValueError, OSError):
            return None  # a damaged entry is recomputed, never trusted
        for qid in info.get("queries", []):
            run.setdefault(qid, {})  # queries with no results have no TREC lines
        return run, info["timing"]

    def put(self, key: str, run: Run, timing: dict[str, float]) -> None:
        # The TREC file first: an entry counts only once its JSON, written last, exists.
        run.to_trec(self.root / f"{key}.trec")
        with atomic_write(self.root / f"{key}.json") as handle:
            json.dump({"timing": timing, "queries": sorted(run)}, handle)
