"""How hard are the mined negatives a cross-encoder trains on? A check before training.

For a seeded sample of training queries, each drawn positive (one, as the cross-encoder's
groups draw it) meets seven negatives mined the way ``cormorant train`` mines them: BM25's top
non-positives, BM25 from rank 30 on (``range_min: 30``), and random documents not judged
relevant. Zero-shot all-MiniLM-L6-v2 scores the eight; the table gives how often the positive
scores above all seven (chance: 1/8). Where a good bi-encoder is at chance, the group's label
says nothing it can see, and a listwise loss over such groups stays at ln 8.

Results: ``benchmarks/results/negative-difficulty.json``; docs/training.md explains them.

    python benchmarks/bench_negative_difficulty.py   # ~5 min here
"""

from __future__ import annotations

import random
from typing import Any

from _common import dataset_path, parser, write_json

GROUP = 7  # negatives per group: the listwise group of the cross-encoder's LCE setting
BUCKETS = [(1, 5), (6, 20), (21, 100), (101, 10**9)]  # judged positives per query


def main() -> None:
    args = parser("Mined negatives against a zero-shot bi-encoder", "negative-difficulty.json")
    args.add_argument("--queries", type=int, default=300, help="seeded sample per dataset")
    opts = args.parse_args()
    out = {"queries_per_dataset": opts.queries, "negatives_per_group": GROUP,
           "chance": round(1 / (GROUP + 1), 3), "datasets": {}}
    for name in ("scifact", "nfcorpus"):
        out["datasets"][name] = measure(name, opts.queries)
        print(name, out["datasets"][name]["overall"])
    write_json(opts.out, out)


def measure(name: str, size: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from cormorant.retrieval.encoders import resolve_model
    from cormorant.training.data import TrainingSet
    from cormorant.training.negatives import MiningConfig, mine

    full = TrainingSet.load(dataset_path(name), "train")
    rng = random.Random(0)
    data = full.subset(sorted(rng.sample(sorted(full.queries), min(size, len(full.queries)))))
    pools = {"bm25 top": mine(data, "bm25", MiningConfig(num_negatives=GROUP)),
             "bm25 from rank 30": mine(data, "bm25", MiningConfig(num_negatives=GROUP, range_min=30)),
             "random": mine(data, "random", MiningConfig(num_negatives=GROUP))}
    positive = {q: rng.choice(data.positives[q]) for q in data.queries}
    # A query BM25 finds fewer than GROUP non-positives for has no full group: left out.
    groups = {label: {q: negatives.ids(q) for q in data.queries if len(negatives.ids(q)) >= GROUP}
              for label, negatives in pools.items()}
    model = SentenceTransformer(resolve_model(None), device="cpu")
    needed = sorted({d for g in groups.values() for ids in g.values() for d in ids}
                    | set(positive.values()))
    vectors = dict(zip(needed, model.encode([data.texts[d] for d in needed], batch_size=64,
                                            normalize_embeddings=True, show_progress_bar=True),
                       strict=True))
    qvec = dict(zip(data.queries, model.encode(list(data.queries.values()),
                                               normalize_embeddings=True), strict=True))
    rows: dict[str, Any] = {"overall": {}, "by_positives": {}}
    for label, by_query in groups.items():
        wins = {q: float(qvec[q] @ vectors[positive[q]] > max(qvec[q] @ vectors[d] for d in ids))
                for q, ids in by_query.items()}
        rows["overall"][label] = round(sum(wins.values()) / len(wins), 3)
        for low, high in BUCKETS:
            inside = [w for q, w in wins.items() if low <= len(data.positives[q]) <= high]
            if inside:
                key = f"{low}-{high}" if high < 10**9 else f"{low}+"
                rows["by_positives"].setdefault(key, {"queries": len(inside)})[label] = \
                    round(sum(inside) / len(inside), 3)
    return rows


if __name__ == "__main__":
    main()
