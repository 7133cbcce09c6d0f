"""On-disk cache of evaluation runs, keyed by what decides them.

A run is fixed by the corpus content, the split's queries (and exclusions), the pipeline string,
each stage's identity (a dense stage's model fingerprint) and the depth. Re-running a report
over the same systems reads the runs back instead of rebuilding indexes and searching again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cormorant import cache
from cormorant.types import Dataset, Run, Split

KIND = "runs"
RUN, META = "run.trec", "meta.json"


def run_key(dataset: Dataset, split_name: str, split: Split, pipeline_identity: Any,
            depth: int) -> str:
    """A stable hash of everything that decides a run."""
    queries = hashlib.sha256(json.dumps(sorted(split.queries.items())).encode()).hexdigest()
    excluded = sorted((q, sorted(d)) for q, d in split.excluded.items())
    from cormorant import __version__

    # The version is part of the key: a new release may rank differently for the same input.
    return cache.key({"version": __version__, "corpus": dataset.corpus.fingerprint,
                      "split": split_name, "queries": queries, "excluded": excluded,
                      "pipeline": pipeline_identity, "depth": depth})


class RunCache:
    """TREC runs plus their timing: one folder per run in the cache (kind ``runs``).

    Example:
        >>> runs = RunCache()  # doctest: +SKIP
        >>> runs.put(key, run, {"search_s": 1.5})  # doctest: +SKIP
        >>> runs.get(key)  # doctest: +SKIP
        (Run(...), {'search_s': 1.5})
    """

    def get(self, key: str) -> tuple[Run, dict[str, float]] | None:
        folder = cache.lookup(KIND, key)
        if folder is None:
            return None
        try:
            info = json.loads((folder / META).read_text())
            run = Run.from_trec(folder / RUN)
        except (ValueError, OSError):
            return None  # a damaged entry is recomputed, never trusted
        for qid in info.get("queries", []):
            run.setdefault(qid, {})  # queries with no results have no TREC lines
        return run, info["timing"]

    def put(self, key: str, run: Run, timing: dict[str, float]) -> None:
        with cache.write(KIND, key, directory=True) as tmp:
            run.to_trec(tmp / RUN)
            (tmp / META).write_text(json.dumps({"timing": timing, "queries": sorted(run)}))
