"""Fusion: every method and norm against ranx, the pipeline fusers sharing it, trec_eval ties."""

import numpy as np
import pytest

from cormorant.errors import CormorantError
from cormorant.fusion import METHODS, NORMS, fuse, normalize
from cormorant.pipeline import RRF, CombSUM, StaticStage
from cormorant.types import Run

RANX_METHOD = {"combsum": "sum", "combmnz": "mnz", "combanz": "anz", "combmax": "max",
               "combmin": "min", "combmed": "med", "wsum": "wsum", "wmnz": "wmnz",
               "rrf": "rrf", "isr": "isr"}
RANX_NORM = {"minmax": "min-max", "max": "max", "sum": "sum", "zscore": "zmuv", "rank": "rank"}


def random_runs(n_runs=3, queries=20, seed=0):
    """Runs over the same queries with distinct, positive scores (no ties, no flat query), so
    ranx's own tie order and flat-query min-max do not come into play."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n_runs):
        run = Run()
        for q in range(queries):
            docs = rng.choice(60, size=int(rng.integers(5, 30)), replace=False)
            scores = rng.permutation(np.linspace(0.5, 20, len(docs))) + rng.random() * 1e-3
            run[f"q{q}"] = {f"d{d}": float(s) for d, s in zip(docs, scores, strict=True)}
        runs.append(run)
    return runs


def ranx_fuse(runs, method, norm, weights=None):
    ranx = pytest.importorskip("ranx")
    params = {"weights": weights} if weights else ({"k": 60} if method == "rrf" else None)
    fused = ranx.fuse([ranx.Run.from_dict({q: dict(d) for q, d in r.items()}) for r in runs],
                      norm=RANX_NORM.get(norm), method=RANX_METHOD[method], params=params)
    return fused.to_dict()


def assert_same_run(ours, theirs):
    assert set(ours) == set(theirs)
    for qid in ours:
        assert set(ours[qid]) == set(theirs[qid]), qid
        for doc, score in ours[qid].items():
            assert score == pytest.approx(theirs[qid][doc], rel=1e-9, abs=1e-12), (qid, doc)


@pytest.mark.parametrize("norm", [n for n in NORMS if n != "none"])
@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("rrf", "isr")])
def test_score_methods_equal_ranx(method, norm):
    runs = random_runs()
    weights = [0.2, 0.5, 0.3] if method in ("wsum", "wmnz") else None
    assert_same_run(fuse(runs, method, norm, weights), ranx_fuse(runs, method, norm, weights))


@pytest.mark.parametrize("method", ["rrf", "isr"])
def test_rank_methods_equal_ranx(method):
    runs = random_runs(seed=1)
    assert_same_run(fuse(runs, method), ranx_fuse(runs, method, None))


def test_normalisations_by_hand():
    docs = {"a": 3.0, "b": 1.0, "c": 2.0}
    assert normalize(docs, "minmax") == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert normalize(docs, "max") == pytest.approx({"a": 1.0, "b": 1 / 3, "c": 2 / 3})
    assert normalize(docs, "sum") == pytest.approx({"a": 2 / 3, "b": 0.0, "c": 1 / 3})
    assert normalize(docs, "rank") == pytest.approx({"a": 1.0, "c": 2 / 3, "b": 1 / 3})
    z = normalize(docs, "zscore")
    assert z["c"] == 0.0 and z["a"] == pytest.approx(1.224744871391589)
    assert normalize({"only": 5.0}, "minmax") == {"only": 1.0}  # ranx: 0 (see fusion's docstring)


def test_queries_of_any_run_are_kept():
    # ranx keeps only the first run's queries; a query another run answers must survive.
    fused = fuse([Run({"q1": {"a": 1.0}}), Run({"q2": {"b": 1.0}})], "combsum")
    assert fused == {"q1": {"a": 1.0}, "q2": {"b": 1.0}}


def test_pipeline_fusers_share_the_offline_implementation():
    runs = random_runs(2, seed=2)
    stages = [StaticStage(r, n) for r, n in zip(runs, "ab", strict=True)]
    queries = {q: "text" for q in runs[0]}
    assert RRF(stages, k=60).rank(queries) == fuse(runs, "rrf", k=60)
    assert RRF([stages[0], 0.5 * stages[1]]).rank(queries) == fuse(runs, "rrf", weights=[1, 0.5])
    assert CombSUM(stages, normalize="zscore").rank(queries) == fuse(runs, "combsum", "zscore")
    # Normalised, weights interpolate the normalised scores (scaling first would cancel them).
    weighted = CombSUM([0.3 * stages[0], 0.7 * stages[1]], normalize="minmax").rank(queries)
    assert weighted == fuse(runs, "combsum", "minmax", weights=[0.3, 0.7])
    assert weighted != CombSUM(stages, normalize="minmax").rank(queries)


@pytest.mark.parametrize("args, message", [
    (("rff",), "did you mean 'rrf'"),
    (("combsum", "minmx"), "did you mean 'minmax'"),
    (("wsum",), "wsum needs weights"),
    (("combmax", "none", [1, 2]), "combmax takes no weights"),
    (("combsum", "none", [1.0]), "1 weights for 2 runs"),
])
def test_bad_fusion_arguments(args, message):
    with pytest.raises(CormorantError, match=message):
        fuse([Run({"q": {"a": 1.0}}), Run({"q": {"a": 2.0}})], *args)
