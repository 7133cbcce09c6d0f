"""TILDEv2 against BM25 and dense re-ranking, on SciFact and NFCorpus test.

Rows, per dataset (all test queries):

- ``bm25``: the in-process BM25 (Pyserini's BEIR settings), top 100: the candidates;
- ``bm25 % 100 >> dense``: all-MiniLM-L6-v2 re-scoring those 100 (query encoded per search);
- ``bm25 % 100 >> tildev2(model=TRAINED)``: the same 100 re-scored by TILDEv2 (query only
  tokenized, candidates' stored weights looked up);
- ``tildev2`` first stage: the sparse product over the whole impact index, top 100;
- ``bm25 % 100 >> combsum((1-a) * bm25, a * tildev2, normalize=minmax)``: the two scores of
  the same 100, each min-max normalised per query, interpolated as TILDE (v1) interpolates
  with BM25; ``a`` is picked on the train split's queries (0.1 to 0.9), never on test (the
  model was trained on those queries, so the pick leans towards TILDEv2 if anything); the
  same interpolation with ``dense`` in its place, its weight picked the same way (the fair
  peer: interpolation helps any re-ranker that BM25 complements).

Reported: nDCG@10 and R@100, paired significance (two-sided randomization test and paired t
test, Holm-corrected together, :mod:`cormorant.eval.significance`) of each row against bm25
and of tildev2 re-ranking against dense re-ranking; re-ranking milliseconds per query for
tildev2 and dense over the same candidates (the batch of every test query, then one query at a
time over a sample, each timed after a warm-up); first-stage queries per second for tildev2
and bm25; the index build time and size; the training time recorded in the model's
``training/summary.json``.

Torch runs one thread and TILDEv2 needs none at query time; timings on a shared 2-core machine
are noisy: rows are timed interleaved (:func:`_common.interleaved`).

Run (after ``cormorant train --kind tildev2 -d DATA -o DIR``):

    python benchmarks/bench_tildev2.py --datasets scifact --trained scifact=DIR
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from _common import REPO, dataset_path, earlier, interleaved, machine, parser, repeats, timed, write_json

MEASURES = ("nDCG@10", "R@100")
DEPTH = 100
SINGLE = 50  # queries timed one at a time


def main() -> None:
    args = parser("TILDEv2 against BM25 and dense re-ranking", "tildev2.json")
    args.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    args.add_argument("--trained", nargs="+", required=True, help="DATASET=DIR of a tildev2 model")
    args.add_argument("--index-root", type=Path, default=REPO / "indexes" / "bench-tildev2",
                      help="where the tildev2 indexes are kept between runs")
    opts = args.parse_args()
    import torch

    torch.set_num_threads(1)
    trained = dict(item.split("=", 1) for item in opts.trained)
    results: dict[str, Any] = earlier(opts.out).get("datasets", {})
    for name in opts.datasets:
        if name not in trained:
            continue
        results[name] = run_dataset(name, trained[name], opts)
        write_json(opts.out, {"machine": machine(), "depth": DEPTH, "datasets": results})
        print(json.dumps(results[name], indent=1), flush=True)


def run_dataset(name: str, model: str, opts: Any) -> dict[str, Any]:
    from cormorant.data import DatasetSpec
    from cormorant.retrieval.assemble import open_index, save_index
    from cormorant.retrieval.bm25 import BM25Retriever
    from cormorant.retrieval.dense import DenseRetriever

    ds = DatasetSpec(dataset_path(name)).load()
    test = ds.split("test")
    queries = {q: test.queries[q] for q in sorted(test.queries) if q in test.qrels}
    if opts.quick:
        queries = dict(list(queries.items())[:30])
    qrels = {q: test.qrels[q] for q in queries}
    bm25 = BM25Retriever.build(ds.corpus)
    dense = DenseRetriever.build(ds.corpus)  # corpus vectors from the embedding cache
    path = opts.index_root / f"{name}-{Path(model).name}"
    build = None
    if not (path / "meta.json").is_file():
        _, seconds = timed(lambda: save_index(f"tildev2(model={model})", ds.corpus, path))
        build = {"seconds": round(seconds, 1)}
    tilde = open_index(path).pipeline.stage
    leaf = next(path.glob("0-tildev2"))
    index = {"bytes": sum(p.stat().st_size for p in leaf.iterdir()),
             "postings": json.loads((leaf / "meta.json").read_text())["postings"],
             "build": build}

    candidates = bm25.retrieve(queries, DEPTH)
    runs: dict[str, Any] = {"bm25": candidates}
    speed = rerank_speed(queries, candidates, dense, tilde, repeats(opts), runs)
    speed.update(first_stage_speed(queries, bm25, tilde, repeats(opts), runs))
    interpolation = {}
    for label, stage in (("tildev2", tilde), ("dense", dense)):
        alpha, picked_on = interpolation_weight(ds, bm25, stage, opts.quick)
        runs[INTERPOLATED.format(label)] = interpolate(candidates, runs[f"bm25 >> {label}"], alpha)
        interpolation[label] = {"weight": alpha, "picked_on": picked_on}
    rows = {label: metrics(run, qrels) for label, run in runs.items()}
    return {"queries": len(queries), "model": model, "training": training_record(model),
            "index": index, "rows": rows, "speed": speed, "interpolation": interpolation,
            "significance": significance(name, runs, qrels)}


INTERPOLATED = "bm25 >> combsum(bm25, {}, normalize=minmax), weights from train"
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def interpolate(bm25_run: Any, tilde_run: Any, alpha: float) -> Any:
    """What ``combsum((1-alpha) * bm25, alpha * tildev2, normalize=minmax)`` gives after
    ``bm25 % 100 >>`` (the same fuse call the pipeline's combsum makes)."""
    from cormorant.fusion import fuse

    return fuse([bm25_run, tilde_run], "combsum", "minmax", weights=[1 - alpha, alpha])


def interpolation_weight(ds: Any, bm25: Any, stage: Any, quick: bool) -> tuple[float, str]:
    """``stage``'s weight with the best nDCG@10 on the train split's judged queries."""
    train = ds.split("train")
    queries = {q: train.queries[q] for q in sorted(train.queries) if q in train.qrels}
    if quick:
        queries = dict(list(queries.items())[:30])
    candidates = bm25.retrieve(queries, DEPTH)
    rescored = stage.rescore(queries, candidates)
    qrels = {q: train.qrels[q] for q in queries}
    found = {a: metrics(interpolate(candidates, rescored, a), qrels)["nDCG@10"] for a in WEIGHTS}
    return max(found, key=lambda a: (found[a], -a)), f"train ({len(queries)} queries): {found}"


def rerank_speed(queries: dict[str, str], candidates: Any, dense: Any, tilde: Any,
                 rounds: int, runs: dict[str, Any]) -> dict[str, Any]:
    """Milliseconds per query to re-score bm25's candidates: all queries in one call, and
    one query a call over a seeded sample."""
    out: dict[str, Any] = {}
    batch = interleaved({"dense": lambda: runs.__setitem__("bm25 >> dense",
                                                            dense.rescore(queries, candidates)),
                         "tildev2": lambda: runs.__setitem__("bm25 >> tildev2",
                                                              tilde.rescore(queries, candidates))},
                        rounds)
    out["rerank_ms_per_query_batch"] = {k: round(1000 * statistics.median(v) / len(queries), 3)
                                        for k, v in batch.items()}
    sample = random.Random(0).sample(sorted(queries), min(SINGLE, len(queries)))

    def one_by_one(stage: Any) -> Any:
        return lambda: [stage.rescore({q: queries[q]}, candidates) for q in sample]

    single = interleaved({"dense": one_by_one(dense), "tildev2": one_by_one(tilde)}, rounds)
    out["rerank_ms_per_query_single"] = {k: round(1000 * statistics.median(v) / len(sample), 3)
                                         for k, v in single.items()}
    ratio = out["rerank_ms_per_query_single"]
    out["tildev2_over_dense_single"] = round(ratio["tildev2"] / ratio["dense"], 4)
    return out


def first_stage_speed(queries: dict[str, str], bm25: Any, tilde: Any, rounds: int,
                      runs: dict[str, Any]) -> dict[str, Any]:
    """Queries per second of a whole-collection top-100 search, all queries in one call."""
    timings = interleaved({"bm25": lambda: bm25.retrieve(queries, DEPTH),
                           "tildev2": lambda: runs.__setitem__("tildev2 (first stage)",
                                                                tilde.retrieve(queries, DEPTH))},
                          rounds)
    return {"first_stage_qps": {k: round(len(queries) / statistics.median(v), 1)
                                for k, v in timings.items()}}


def metrics(run: Any, qrels: dict) -> dict[str, float]:
    from cormorant.eval.measures import evaluate

    found = evaluate(run, qrels, list(MEASURES))
    return {m: round(found.aggregate[m], 4) for m in MEASURES}


def significance(name: str, runs: dict[str, Any], qrels: dict) -> list[dict[str, Any]]:
    """Each row against bm25, and tildev2 re-ranking against dense re-ranking, on nDCG@10."""
    from cormorant.eval.measures import evaluate
    from cormorant.eval.significance import compare, correct

    per_query = {label: {q: v["nDCG@10"] for q, v in evaluate(run, qrels, ["nDCG@10"])
                         .per_query.items()} for label, run in runs.items()}
    pairs = [(label, "bm25") for label in runs if label != "bm25"]
    pairs.append(("bm25 >> tildev2", "bm25 >> dense"))
    pairs.append((INTERPOLATED.format("tildev2"), INTERPOLATED.format("dense")))
    found = correct([compare(name, "nDCG@10", s, b, per_query[s], per_query[b])
                     for s, b in pairs])
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.to_json().items()}
            for c in found]


def training_record(model: str) -> dict[str, Any]:
    """What ``cormorant train`` recorded: seconds, steps and whether the budget stopped it."""
    path = Path(model) / "training" / "summary.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    keep = ("seconds", "time_budget", "group", "groups", "negatives", "expanded_passages")
    return {k: summary.get(k) for k in keep}


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - start:.0f} s")
