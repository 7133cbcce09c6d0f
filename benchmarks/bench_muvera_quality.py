"""MUVERA on real data: FDE candidates against exact Chamfer and the single-vector heuristic.

For each dataset (SciFact and NFCorpus test queries, all-MiniLM-L6-v2 token vectors):

- exact Chamfer (the ``chamfer`` stage) ranks the whole corpus: its top-10 is the target;
- recall of that top-10 among the first N candidates, N in 100/200/500/1000, of
  * the FDE (flat inner product; one or more FDE settings),
  * the same FDE from the independent ``muvera-python`` package (quality oracle),
  * the single-vector (SV) heuristic: every query token's N nearest document tokens (exact,
    flat FAISS over all token vectors), their documents ordered by the sum over query tokens
    of the best similarity found (a partial Chamfer score), top N;
- nDCG@10 of exact Chamfer, FDE alone, and FDE top-N re-ranked exactly;
- the FDE index variants (flat, HNSW, IVF-PQ) at the default candidate count: recall and bytes;
- per-query latency of ``muvera`` against exact brute-force Chamfer on this corpus.

Token vectors are encoded once per corpus and cached (``$CORMORANT_CACHE/tokens``).

Run: ``python benchmarks/bench_muvera_quality.py`` (about 15 minutes with empty caches).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import _common  # noqa: F401  (pins the environment first)
import numpy as np

from cormorant.data import load_dataset
from cormorant.eval.measures import evaluate
from cormorant.index.faiss_index import FaissIndex
from cormorant.index.muvera import FDEConfig
from cormorant.index.token_store import TokenStore
from cormorant.retrieval.chamfer import ChamferRetriever, rerank_rows
from cormorant.retrieval.multivector import TokenEncoder
from cormorant.retrieval.muvera import MuveraEncoder, MuveraRetriever
from cormorant.types import Run

DEPTHS = (100, 200, 500, 1000)
MUVERA_CANDIDATES = (100, 200, 300, 500)  # the `muvera` stage end to end (pqfs index)
CARVE = (0.7, 0.85)  # ball-carving thresholds tried at 200 and 300 candidates
SETTINGS = {  # name: FDE parameters; the first is the paper's (and our default)
    "R20 k5 d16 (10240)": dict(repetitions=20, k_sim=5, d_proj=16),
    "R40 k5 d16 (20480)": dict(repetitions=40, k_sim=5, d_proj=16),
    "R20 k4 d32 (10240)": dict(repetitions=20, k_sim=4, d_proj=32),
}


def timed_run(retriever: ChamferRetriever, queries: dict[str, str]) -> tuple[Run, float]:
    start = time.perf_counter()
    run = retriever.retrieve(queries, 1000)
    return run, time.perf_counter() - start


def top10(run: Run, qid: str) -> set[str]:
    return {doc for doc, _ in run.ranked(qid)[:10]}


def recall_at(targets: list[set[int]], candidates: np.ndarray, n: int) -> float:
    """Mean share of each query's exact top-10 found among its first ``n`` candidates."""
    return float(np.mean([len(t & set(row[:n].tolist())) / len(t)
                          for t, row in zip(targets, candidates, strict=True) if t]))


def reranked_run(qids: list[str], tokens: list[np.ndarray], store: TokenStore,
                 candidates: np.ndarray, n: int, doc_ids: list[str]) -> Run:
    run = Run()
    for qid, query, row in zip(qids, tokens, candidates, strict=True):
        rows = row[:n][row[:n] >= 0]
        scores = rerank_rows(query, store, rows)
        order = np.argsort(-scores, kind="stable")[:100]
        run[qid] = {doc_ids[rows[i]]: float(scores[i]) for i in order}
    return run


def fde_candidates(query_fdes: np.ndarray, doc_fdes: np.ndarray, depth: int) -> np.ndarray:
    index = FaissIndex(doc_fdes.shape[1], kind="flat", metric="ip")
    index.add([str(i) for i in range(len(doc_fdes))], doc_fdes)
    return index.search(query_fdes, depth)[1]


def sv_heuristic(tokens: list[np.ndarray], store: TokenStore,
                 depth: int) -> dict[str, np.ndarray]:
    """Top ``depth`` documents per query from per-token nearest neighbours, two ways.

    Every query token's ``depth`` nearest document tokens (exact, flat FAISS over all token
    vectors) are mapped to their documents. ``union`` (the paper's heuristic): the distinct
    documents in rank order (every query token's first neighbour, then every second, ...), the
    first N of them being the N candidates. ``partial Chamfer`` (a stronger variant): the
    documents ordered by the sum over query tokens of the best similarity each one reached.
    """
    import faiss

    owner = np.repeat(np.arange(len(store)), np.diff(store.offsets))
    index = faiss.IndexFlatIP(store.dim)
    for start in range(0, store.tokens.shape[0], 1 << 18):
        index.add(np.asarray(store.tokens[start:start + (1 << 18)], np.float32))
    union = np.full((len(tokens), depth), -1, dtype=np.int64)
    scored = np.full((len(tokens), depth), -1, dtype=np.int64)
    for i, query in enumerate(tokens):
        sims, rows = index.search(np.ascontiguousarray(query), depth)
        docs = owner[rows]
        sequence = docs.T.ravel()  # rank-major: rank 0 of every query token first
        _, first = np.unique(sequence, return_index=True)
        distinct = sequence[np.sort(first)][:depth]
        union[i, :len(distinct)] = distinct
        partial: dict[int, np.ndarray] = {}
        for t in range(len(query)):
            # Each query token adds its best similarity per document it reached.
            for doc, sim in zip(docs[t][::-1], sims[t][::-1], strict=True):
                partial.setdefault(int(doc), np.zeros(len(query)))[t] = sim
        ranked = sorted(partial, key=lambda d: -partial[d].sum())[:depth]
        scored[i, :len(ranked)] = ranked
    return {"single-vector heuristic (union, the paper's)": union,
            "single-vector + partial Chamfer order": scored}


def sv_section(tokens: list[np.ndarray], store: TokenStore,
               targets: list[set[int]]) -> dict[str, dict[int, float]]:
    return {label: {n: round(recall_at(targets, rows, n), 4) for n in DEPTHS}
            for label, rows in sv_heuristic(tokens, store, max(DEPTHS)).items()}


def muvera_python_fdes(tokens: list[np.ndarray], store: TokenStore,
                       params: dict[str, int]) -> tuple[np.ndarray, np.ndarray, float]:
    from muvera import Muvera

    encoder = Muvera(num_repetitions=params["repetitions"],
                     num_simhash_projections=params["k_sim"], dimension=store.dim,
                     projection_type="ams_sketch", projection_dimension=params["d_proj"], seed=1)
    start = time.perf_counter()
    docs = encoder.encode_documents([store.document(i) for i in range(len(store))])
    seconds = time.perf_counter() - start
    return encoder.encode_queries(list(tokens)), np.asarray(docs, np.float32), seconds


def ndcg(run: Run, qrels: dict[str, dict[str, int]]) -> float:
    return round(evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"], 4)


def index_variants(doc_fdes: np.ndarray, query_fdes: np.ndarray, targets: list[set[int]],
                   n: int, token_bytes: float) -> dict[str, Any]:
    """Recall at ``n`` and bytes per document of the FDE in flat, HNSW and IVF-PQ indexes."""
    import tempfile
    from pathlib import Path

    out = {}
    dim = doc_fdes.shape[1]
    ids = [str(i) for i in range(len(doc_fdes))]
    for kind in ("flat", "HNSW32,SQ8", "pqfs"):
        start = time.perf_counter()
        index = FaissIndex(dim, kind=kind, metric="ip")
        index.add(ids, doc_fdes)
        build = time.perf_counter() - start
        rows = index.search(query_fdes, n)[1]
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp))
            size = sum(f.stat().st_size for f in Path(tmp).iterdir())
        out[kind] = {"recall": round(recall_at(targets, rows, n), 4),
                     "bytes_per_doc": round(size / len(doc_fdes)),
                     "share_of_token_store": round(size / len(doc_fdes) / token_bytes, 3),
                     "build_s": round(build, 2)}
    return out


@dataclass
class Target:
    """A dataset's test queries with their exact Chamfer run: what every section measures
    against."""

    dataset: Any
    qrels: dict[str, dict[str, int]]
    queries: dict[str, str]
    tokens: list[np.ndarray]
    store: TokenStore
    encoder: TokenEncoder
    doc_ids: list[str]
    exact_run: Run
    exact_s: float

    @property
    def qids(self) -> list[str]:
        return list(self.queries)

    @property
    def top10_rows(self) -> list[set[int]]:
        position = {d: i for i, d in enumerate(self.doc_ids)}
        return [{position[d] for d in top10(self.exact_run, q)} for q in self.queries]


def exact_target(name: str, encoder: TokenEncoder) -> Target:
    dataset = load_dataset(_common.dataset_path(name))
    split = dataset.split("test")
    queries = {q: split.queries[q] for q in sorted(split.queries) if q in split.qrels}
    exact = ChamferRetriever.build(dataset.corpus)
    exact_run, exact_s = timed_run(exact, queries)
    tokens = encoder.encode_queries(list(queries.values()))
    base = exact.segments.items[0]  # a fresh build: one segment
    return Target(dataset, split.qrels, queries, tokens, base.data, encoder, base.doc_ids,
                  exact_run, exact_s)


def muvera_section(target: Target) -> dict[str, Any]:
    """The ``muvera`` stage with its defaults, end to end, at several candidate counts and
    with ball carving."""
    muvera = MuveraRetriever.build(target.dataset.corpus)  # as `-p muvera` gets it
    result: dict[str, Any] = {"index": muvera.index.factory, "fde": muvera.fde.config.to_json()}
    for n, carve in [(n, None) for n in MUVERA_CANDIDATES] + [
            (n, c) for c in CARVE for n in MUVERA_CANDIDATES[1:3]]:
        muvera.candidates, muvera.carve = n, carve
        run, seconds = timed_run(muvera, target.queries)
        label = str(n) if carve is None else f"{n}, carve={carve}"
        result[label] = {
            "ndcg@10": ndcg(run, target.qrels),
            "recall_of_exact_top10": round(float(np.mean(
                [len(top10(run, q) & top10(target.exact_run, q)) / 10 for q in target.qids])), 4),
            "s_per_query": round(seconds / len(target.qids), 4),
            "speedup_vs_exact": round(target.exact_s / seconds, 1)}
    return result


def bench_dataset(target: Target) -> dict[str, Any]:
    store, doc_ids = target.store, target.doc_ids
    qids, tokens, targets = target.qids, target.tokens, target.top10_rows
    exact_run, exact_s = target.exact_run, target.exact_s
    token_bytes = store.tokens.nbytes / len(store)
    result: dict[str, Any] = {
        "documents": len(store), "queries": len(qids),
        "tokens_per_doc": round(store.tokens.shape[0] / len(store), 1),
        "token_store_bytes_per_doc": round(token_bytes),
        "ndcg@10": {"chamfer": ndcg(exact_run, target.qrels)},
        "exact_chamfer_s_per_query": round(exact_s / len(qids), 4),
        "recall_of_exact_top10": {}, "fde": {},
    }
    default = None
    for label, params in SETTINGS.items():
        config = FDEConfig(store.dim, **params)
        fde = MuveraEncoder(target.encoder, config)
        start = time.perf_counter()
        doc_fdes = np.vstack([v for _, v in fde.documents_from_store(store, progress=False)])
        encode_s = time.perf_counter() - start
        query_fdes = fde.queries_from_tokens(tokens)
        rows = fde_candidates(query_fdes, doc_fdes, max(DEPTHS))
        fde_run = Run()
        for q, row in zip(qids, rows, strict=True):  # FDE order as descending pseudo-scores
            fde_run[q] = {doc_ids[r]: -float(i) for i, r in enumerate(row[:100])}
        result["recall_of_exact_top10"][label] = {n: round(recall_at(targets, rows, n), 4)
                                                  for n in DEPTHS}
        result["fde"][label] = {
            "dimension": config.output_dim, "encode_docs_per_s": round(len(store) / encode_s),
            "ndcg@10_fde_only": ndcg(fde_run, target.qrels),
        }
        if default is None:  # re-ranking every setting at every depth would cost an hour
            result["fde"][label]["ndcg@10_reranked"] = {
                n: ndcg(reranked_run(qids, tokens, store, rows, n, doc_ids), target.qrels)
                for n in DEPTHS}
            default = (config, params, doc_fdes, query_fdes)
    config, params, doc_fdes, query_fdes = default
    q_py, d_py, py_s = muvera_python_fdes(tokens, store, params)
    rows = fde_candidates(np.asarray(q_py, np.float32), d_py, max(DEPTHS))
    result["recall_of_exact_top10"]["muvera-python, same settings"] = {
        n: round(recall_at(targets, rows, n), 4) for n in DEPTHS}
    result["fde_encode_docs_per_s"] = {"cormorant": result["fde"][next(iter(SETTINGS))][
        "encode_docs_per_s"], "muvera-python": round(len(store) / py_s)}
    result["recall_of_exact_top10"].update(sv_section(tokens, store, targets))
    result["fde_indexes_at_100"] = index_variants(doc_fdes, query_fdes, targets, 100, token_bytes)
    result["muvera"] = muvera_section(target)
    return result


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0], "muvera-quality.json")
    args.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    args.add_argument("--only", choices=["sv", "muvera"], default=None,
                      help="re-measure one section and update it in an existing --out file")
    options = args.parse_args()
    encoder = TokenEncoder()
    results = json.loads(options.out.read_text())["results"] if options.only else {}
    for name in options.datasets:
        print(f"{name}: measuring", flush=True)
        target = exact_target(name, encoder)
        if options.only == "sv":
            results[name]["recall_of_exact_top10"].update(
                sv_section(target.tokens, target.store, target.top10_rows))
        elif options.only == "muvera":
            results[name]["muvera"] = muvera_section(target)
        else:
            results[name] = bench_dataset(target)
        print(json.dumps(results[name], indent=1), flush=True)
    _common.write_json(options.out, {"benchmark": "muvera-quality", "results": results})


if __name__ == "__main__":
    main()
