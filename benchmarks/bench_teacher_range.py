"""The base student's score range per training query: what ``teacher_range`` (7.5) is set from.

For each training query of SciFact and NFCorpus, all-MiniLM-L6-v2 scores its positives and
BM25's top 8 non-positives as the losses do (20 x cosine); prints the mean and median of
max - min over each query's list, the mean standard deviation, and the mean positive-minus-
negative margin. Pipeline teachers' scores are min-max scaled per query and multiplied by
``teacher_range``, so their margins span what the student can reach (docs/training.md).

    python benchmarks/bench_teacher_range.py
"""

from __future__ import annotations

import numpy as np
from _common import dataset_path


def main() -> None:
    from cormorant.training.data import TrainingSet
    from cormorant.training.negatives import MiningConfig, mine
    from cormorant.training.teacher import BiEncoderTeacher

    for name in ("scifact", "nfcorpus"):
        data = TrainingSet.load(dataset_path(name), "train")
        negatives = mine(data, "bm25", MiningConfig(num_negatives=8))
        queries, docs = BiEncoderTeacher(None).vectors(data)
        ranges, stds, margins = [], [], []
        for qid in data.queries:
            ids = data.positives[qid] + negatives.ids(qid)
            scores = np.array([20 * float(queries[qid] @ docs[d]) for d in ids])
            ranges.append(scores.max() - scores.min())
            stds.append(scores.std())
            split = len(data.positives[qid])
            if len(ids) > split:
                margins.append(np.mean(scores[:split, None] - scores[None, split:]))
        print(f"{name}: mean range {np.mean(ranges):.2f}, median {np.median(ranges):.2f},"
              f" mean std {np.mean(stds):.2f}, mean positive-negative margin"
              f" {np.mean(margins):.2f}", flush=True)


if __name__ == "__main__":
    main()
