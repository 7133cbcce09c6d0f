"""Fusion speed: ``cormorant.fusion.fuse`` (plain Python) against ``ranx.fuse`` (numba).

Two runs of 300 queries x 1,000 random documents each (SciFact's test set at depth 1000), fused
with rrf, min-max combsum and z-score combmnz. Reported: seconds per fusion for ours; for
ranx, the import, the conversion of our runs into its typed dictionaries and the fusion (the
first call compiles numba kernels unless its on-disk cache is warm). Measured on the 2-core
development machine (Dec 2026): ours 0.39 / 0.24 / 0.87 s; ranx import 2.0 s, then 20.3 s
(first call, compiling), 3.0 s and 2.9 s. This is why ``cormorant.fusion`` does not call ranx.

Run: ``PYTHONPATH=src python benchmarks/bench_fusion.py``
"""

from __future__ import annotations

import time

import numpy as np

from cormorant.fusion import fuse
from cormorant.types import Run

CASES = [("rrf", "none", "rrf", None), ("combsum", "minmax", "sum", "min-max"),
         ("combmnz", "zscore", "mnz", "zmuv")]


def random_runs(n_runs: int = 2, queries: int = 300, depth: int = 1000) -> list[Run]:
    """Runs with random scores over a 5,183-document collection (SciFact's size)."""
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(n_runs):
        run = Run()
        for q in range(queries):
            docs = rng.choice(5183, depth, replace=False)
            run[f"q{q}"] = {f"d{d}": float(s) for d, s in zip(docs, rng.random(depth), strict=True)}
        runs.append(run)
    return runs


def main() -> None:
    runs = random_runs()
    for method, norm, _, _ in CASES:
        start = time.perf_counter()
        fuse(runs, method, norm)
        print(f"cormorant {method:8} {norm:7} {time.perf_counter() - start:6.2f} s")
    start = time.perf_counter()
    import ranx

    print(f"ranx import {time.perf_counter() - start:6.2f} s")
    for _, _, method, norm in CASES:
        start = time.perf_counter()
        converted = [ranx.Run.from_dict(r) for r in runs]
        middle = time.perf_counter()
        ranx.fuse(converted, norm=norm, method=method)
        print(f"ranx {method:8} {norm or '-':7} convert {middle - start:6.2f} s,"
              f" total {time.perf_counter() - middle:6.2f} s")


if __name__ == "__main__":
    main()
