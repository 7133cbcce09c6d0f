"""A small synthetic training collection: 48 documents on 12 topics, 24 train and 6 test queries.

Each query repeats rare words of its one relevant document, so BM25 finds it and a model can
learn it; documents of one topic share words, so topics make clusters and hard negatives.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["heart", "sleep", "vitamin", "cancer", "virus", "brain", "diet", "lung", "bone",
          "skin", "liver", "blood"]


def write_training_beir(folder: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    docs, queries, qrels = [], {}, {"train": [], "test": []}
    for t, topic in enumerate(TOPICS):
        for v in range(4):
            doc_id = f"d{t}-{v}"
            marker = f"marker{t}x{v}"
            words = [topic] * 3 + [marker] * 2 + rng.sample(TOPICS, 3)
            rng.shuffle(words)
            docs.append({"_id": doc_id, "title": f"{topic} study {v}", "text": " ".join(words)})
            qid = f"q{t}-{v}"
            queries[qid] = f"{topic} {marker} effect"
            split = "test" if v == 3 and t % 2 == 0 else "train"
            qrels[split].append(f"{qid}\t{doc_id}\t1")
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    for split, rows in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder
