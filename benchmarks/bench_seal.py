"""SEAL generative retrieval against BM25 and dense on SciFact and NFCorpus.

Rows, per dataset: ``bm25``, ``dense`` (all-MiniLM-L6-v2), ``seal`` with the untrained
generator (SmolLM2-135M-Instruct), ``seal`` with a generator trained by
``cormorant train --kind seal`` (``--trained DATASET=DIR``), and ``rrf(dense, seal)`` for each
seal row. Reported: nDCG@10 and R@100, seconds per query, the suffix array's build time and
size on disk.

Constrained beam search with a 135M-parameter model costs seconds per query on these shared
2-core CPUs, so seal rows run on a seeded sample of the test queries (``--queries``); bm25 and
dense are reported on the same sample (the comparison) and on every test query (to show how
representative the sample is). Torch runs one thread: with two threads on a machine already
busy, a forward pass measured 12x slower (thread hand-offs wait for a busy core).

Each run merges its rows into ``--out``, so rows can be measured in separate runs:

    python benchmarks/bench_seal.py --datasets scifact --rows untrained
    python benchmarks/bench_seal.py --datasets scifact --rows trained \\
        --trained scifact=models/seal-scifact
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from _common import REPO, dataset_path, earlier, parser, timed, write_json

MEASURES = ("nDCG@10", "R@100")
DEPTH = 100
# Seal rows: the generator (None: untrained, "trained": --trained DATASET=DIR) and the stage's
# extra parameters. trained-titles adds the paper's title keys to the trained generator.
SEAL_ROWS = {"untrained": (None, []), "trained": ("trained", []),
             "trained-titles": ("trained", ["titles=true"])}
# Weighted RRF, rrf(dense, w * seal): the weights tried, and the folds of the test queries over
# which w is chosen (on the other folds) and measured (on the fold), so no query scores the
# weight it helped to choose.
WEIGHTS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)
FOLDS = 5


def main() -> None:
    args = parser("SEAL against BM25 and dense", "seal.json")
    args.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    args.add_argument("--rows", nargs="+", default=["baselines", "untrained", "trained"],
                      choices=["baselines", *SEAL_ROWS, "compare", "weighted"])
    args.add_argument("--queries", type=int, default=50, help="seeded sample of test queries")
    args.add_argument("--beams", type=int, default=5, help="beam width (the paper: 15)")
    args.add_argument("--max-length", type=int, default=10, help="longest decoded n-gram")
    args.add_argument("--trained", nargs="*", default=[], help="DATASET=DIR of a trained generator")
    args.add_argument("--index-root", type=Path, default=REPO / "indexes" / "bench-seal",
                      help="where the seal indexes are kept between runs")
    opts = args.parse_args()
    import torch

    torch.set_num_threads(1)
    trained = dict(item.split("=", 1) for item in opts.trained)
    results: dict[str, Any] = earlier(opts.out).get("datasets", {})
    for name in opts.datasets:
        results[name] = {**results.get(name, {}), **run_dataset(name, opts, trained.get(name),
                                                                 results.get(name, {}))}
        write_json(opts.out, {"settings": {"queries": opts.queries, "beams": opts.beams,
                                           "max_length": opts.max_length, "depth": DEPTH},
                              "datasets": results})


def run_dataset(name: str, opts: Any, trained: str | None, previous: dict[str, Any]) -> dict:
    from cormorant.data import DatasetSpec

    ds = DatasetSpec(dataset_path(name)).load()
    test = ds.split("test")
    judged = sorted(q for q in test.queries if q in test.qrels)
    sample = sorted(random.Random(0).sample(judged, min(opts.queries, len(judged))))
    queries = {q: test.queries[q] for q in sample}
    out: dict[str, Any] = {"test_queries": len(judged), "sampled_queries": len(sample),
                           "rows": dict(previous.get("rows", {}))}
    runs_dir = opts.index_root / f"{name}-runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    if "baselines" in opts.rows:
        for stage, run, seconds in baselines(ds, test, queries):
            out["rows"][stage] = {**metrics(run["sample"], test.qrels),
                                  "all_queries": metrics(run["all"], test.qrels),
                                  "seconds_per_query": seconds}
            _save_run(runs_dir / f"{stage}.json", run["sample"])
    index_dir, build = seal_index(name, ds.corpus, opts.index_root)
    out["seal_index"] = build or previous.get("seal_index")
    for row, (generator, extra) in SEAL_ROWS.items():
        model = trained if generator == "trained" else None
        if row not in opts.rows or (generator and not model):
            continue
        label = f"seal ({row})"
        print(f"{name}: {label} over {len(queries)} queries", flush=True)
        run, seconds, stage = seal_run(index_dir, model, queries, opts, extra)
        out["rows"][label] = {**metrics(run, test.qrels), "seconds_per_query": seconds,
                              "model": model or "SmolLM2-135M-Instruct (untrained)"}
        if stage.titles:
            out["rows"][label]["title_keys"] = title_key_stats(stage, queries)
        _save_run(runs_dir / f"seal-{row}.json", run)
        dense = _load_run(runs_dir / "dense.json")
        if dense is not None:
            out["rows"][f"rrf(dense, seal {row})"] = metrics(fuse(dense, run), test.qrels)
    if "compare" in opts.rows:
        out["significance"] = compare(runs_dir, test.qrels)
    if "weighted" in opts.rows:
        out["weighted_rrf"] = weighted_fusion(runs_dir, test.qrels)
    return out


def weighted_fusion(runs_dir: Path, qrels: dict, seal: str = "seal-trained") -> dict[str, Any]:
    """``rrf(dense, w * seal)`` with w chosen by cross-validation over the test queries, its
    p against dense, each weight's nDCG@10 over all queries, and two controls at the weight
    chosen most: the seal run's documents in a random order, and random documents."""
    from cormorant.eval.significance import randomization_test

    dense, found = _load_run(runs_dir / "dense.json"), _load_run(runs_dir / f"{seal}.json")
    if dense is None or found is None:
        return {}
    qids = sorted(q for q in found if q in qrels)
    judged = {q: qrels[q] for q in qids}
    base = _per_query(dense, judged)
    by_weight = {w: _per_query(fuse_weighted(dense, found, w), judged) for w in WEIGHTS}
    chosen, scored = cross_validate(by_weight, qids)
    usual = max(set(chosen), key=chosen.count)
    controls = {name: _mean(_per_query(fuse_weighted(dense, run, usual), judged))
                for name, run in control_runs(dense, found, qids).items()}
    bm25 = _load_run(runs_dir / "bm25.json")
    if bm25 is not None:  # the lexical retriever in the same place, for scale
        controls.update({f"bm25 in seal's place (w={w})": _mean(_per_query(
            fuse_weighted(dense, bm25, w), judged)) for w in (usual, 1.0)})
    return {"queries": len(qids), "folds": FOLDS, "chosen_weights": chosen,
            "nDCG@10 (cross-validated)": round(sum(scored.values()) / len(qids), 4),
            "dense nDCG@10": _mean(base),
            "p vs dense": round(randomization_test([scored[q] for q in qids],
                                                   [base[q] for q in qids]), 4),
            "nDCG@10 by weight": {str(w): _mean(v) for w, v in by_weight.items()},
            f"controls at w={usual}": controls}


def cross_validate(by_weight: dict[float, dict[str, float]], qids: list[str]
                   ) -> tuple[list[float], dict[str, float]]:
    """Per fold, the weight best on the other folds, and each query's score under its fold's
    weight (seeded folds)."""
    order = random.Random(0).sample(qids, len(qids))
    fold_of = {q: i % FOLDS for i, q in enumerate(order)}
    chosen, scored = [], {}
    for fold in range(FOLDS):
        rest = [q for q in qids if fold_of[q] != fold]
        weight = max(by_weight, key=lambda w: sum(by_weight[w][q] for q in rest))
        chosen.append(weight)
        scored.update({q: by_weight[weight][q] for q in qids if fold_of[q] == fold})
    return chosen, scored


def control_runs(dense: Any, found: Any, qids: list[str]) -> dict[str, dict]:
    """What the seal run's order adds: its documents shuffled per query, and random documents."""
    rng = random.Random(0)
    shuffled = {q: dict(zip(rng.sample(list(docs), len(docs)),
                            sorted(docs.values(), reverse=True), strict=True))
                for q, docs in found.items()}
    every_doc = sorted({d for docs in dense.values() for d in docs})
    noise = {q: {d: float(-i) for i, d in enumerate(rng.sample(every_doc, DEPTH))} for q in qids}
    return {"seal documents in random order": shuffled, "random documents": noise}


def fuse_weighted(dense: Any, other: Any, weight: float) -> Any:
    """``rrf(dense, weight * other)`` over two saved runs."""
    from cormorant.pipeline import RRF, StaticStage
    from cormorant.types import Run

    other = Run(other)
    return RRF([StaticStage(dense), weight * StaticStage(other)]).fuse([dense, other])


def _per_query(run: Any, judged: dict) -> dict[str, float]:
    from cormorant.eval.measures import evaluate

    return {q: m["nDCG@10"] for q, m in evaluate(run, judged, ["nDCG@10"]).per_query.items()}


def _mean(per_query: dict[str, float]) -> float:
    return round(sum(per_query.values()) / len(per_query), 4)


def compare(runs_dir: Path, qrels: dict) -> dict[str, float]:
    """Two-sided paired randomisation-test p-values on per-query nDCG@10, from saved runs."""
    from cormorant.eval.measures import evaluate
    from cormorant.eval.significance import randomization_test

    runs = {p.stem: _load_run(p) for p in runs_dir.glob("*.json")}
    for row in SEAL_ROWS:
        if f"seal-{row}" in runs and "dense" in runs:
            runs[f"rrf-{row}"] = fuse(runs["dense"], runs[f"seal-{row}"])
    pairs = [("seal-trained", "seal-untrained"), ("rrf-trained", "dense"),
             ("rrf-untrained", "dense"), ("seal-trained", "bm25"),
             ("seal-trained-titles", "seal-trained"), ("rrf-trained-titles", "dense")]
    found = {}
    for system, baseline in pairs:
        if system not in runs or baseline not in runs:
            continue
        queries = sorted(runs[system].keys() & runs[baseline].keys())
        judged = {q: qrels[q] for q in queries if q in qrels}
        a = evaluate(runs[system], judged, ["nDCG@10"]).per_query
        b = evaluate(runs[baseline], judged, ["nDCG@10"]).per_query
        found[f"{system} vs {baseline}"] = round(randomization_test(
            [a[q]["nDCG@10"] for q in judged], [b[q]["nDCG@10"] for q in judged]), 4)
    return found


def baselines(ds: Any, test: Any, queries: dict[str, str]) -> list[tuple[str, dict, float]]:
    from cormorant.retrieval.bm25 import BM25Retriever
    from cormorant.retrieval.dense import DenseRetriever

    found = []
    for stage, build in (("bm25", BM25Retriever.build), ("dense", DenseRetriever.build)):
        retriever = build(ds.corpus)
        all_run = retriever.retrieve(test.queries, DEPTH)
        start = time.perf_counter()
        sample_run = retriever.retrieve(queries, DEPTH)
        seconds = (time.perf_counter() - start) / len(queries)
        found.append((stage, {"all": all_run, "sample": sample_run}, seconds))
    return found


def seal_index(name: str, corpus: Any, root: Path) -> tuple[Path, dict[str, Any] | None]:
    """The seal index of ``corpus`` (built once, then reused), with build time and size."""
    from cormorant.retrieval.assemble import save_index

    path = root / name
    if (path / "meta.json").is_file():
        return path, None
    _, seconds = timed(lambda: save_index("seal", corpus, path))
    sub = next(path.glob("0-seal"))
    size = sum(p.stat().st_size for p in sub.iterdir() if p.suffix == ".npy")
    tokens = json.loads((sub / "meta.json").read_text())["suffix_array"]["tokens"]
    return path, {"build_seconds": round(seconds, 1), "suffix_array_bytes": size,
                  "corpus_tokens": tokens, "bytes_per_token": round(size / tokens, 2)}


def seal_run(index_dir: Path, model: str | None, queries: dict[str, str],
             opts: Any, extra: list[str]) -> tuple[Any, float, Any]:
    """The stage's run over ``queries``, seconds per query, and the stage itself."""
    from functools import lru_cache

    from cormorant.retrieval.assemble import open_index

    params = [f"beams={opts.beams}", f"max_length={opts.max_length}", *extra]
    if model:
        params.append(f"model={model}")
    stage = open_index(index_dir, pipeline=f"seal({', '.join(params)})").pipeline.stage
    if stage.titles:  # title_key_stats reads the keys the search decoded, not a second decode
        stage.title_keys = lru_cache(maxsize=None)(stage.title_keys)
    start = time.perf_counter()
    run = stage.search(queries, k=DEPTH)
    return run, (time.perf_counter() - start) / len(queries), stage


def title_key_stats(stage: Any, queries: dict[str, str]) -> dict[str, Any]:
    """What title mode added: queries with any title key, the keys, and how many got a positive
    weight. A key counts only where log P(title | q) beats the title's corpus log-probability
    (the paper's weight), so a long title the model finds unlikely adds nothing."""
    import numpy as np

    from cormorant.retrieval.seal.scoring import corpus_log_prob, ngram_weight

    per_query = [stage.title_keys(text) for text in queries.values()]
    keys = [(key, lp) for found in per_query for key, lp in found.items()]
    counts = np.array([stage.index.count(key) for key, _ in keys])
    weights = ngram_weight(np.array([lp for _, lp in keys]),
                           corpus_log_prob(counts, stage.index.total_tokens,
                                           stage.scoring.smoothing)) if keys else np.array([])
    return {"queries_with_keys": sum(1 for found in per_query if found), "keys": len(keys),
            "keys_with_positive_weight": int((weights > 0).sum()),
            "median_log_p_key": round(float(np.median([lp for _, lp in keys])), 2) if keys else None,
            "median_tokens_per_key": float(np.median([len(k) for k, _ in keys])) if keys else None}


def fuse(*runs: Any) -> Any:
    from cormorant.pipeline import RRF, StaticStage

    return RRF([StaticStage(r) for r in runs]).fuse(list(runs))


def metrics(run: Any, qrels: dict) -> dict[str, float]:
    from cormorant.eval.measures import evaluate

    judged = {q: qrels[q] for q in run if q in qrels}
    return {m: round(v, 4) for m, v in evaluate(run, judged, MEASURES).aggregate.items()}


def _save_run(path: Path, run: Any) -> None:
    path.write_text(json.dumps(run))


def _load_run(path: Path) -> Any:
    from cormorant.types import Run

    return Run(json.loads(path.read_text())) if path.is_file() else None


if __name__ == "__main__":
    main()
