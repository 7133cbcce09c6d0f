import numpy as np
import pytest

from cormorant.data import load_dataset
from cormorant.eval.splits import make_split, regime_scores, write_split
from cormorant.types import Dataset, Split


class TopicEncoder:
    """Embeds a query by its topic word, with a little noise: clusters are known in advance."""

    name = "topic-stub"
    topics = ["heart", "cancer", "sleep", "diet"]

    def encode_queries(self, texts):
        rng = np.random.default_rng(len(texts))
        rows = []
        for text in texts:
            vec = np.array([float(t in text) for t in self.topics]) + 0.05 * rng.normal(size=4)
            rows.append(vec)
        return np.array(rows, dtype=np.float32)


def synthetic_dataset(tmp_path=None):
    topics = TopicEncoder.topics
    train = {f"tr{i}": f"{topics[i % 3]} question {i}" for i in range(30)}  # no "diet" training
    test = {f"te{i}": f"{topics[i % 4]} test {i}" for i in range(20)}
    qrels_train = {q: {"d1": 1} for q in train}
    qrels_test = {q: {"d1": 1} for q in test}
    splits = {"train": Split(train, qrels_train), "test": Split(test, qrels_test)}
    return Dataset("synthetic", None, list(splits), splits.__getitem__), qrels_train, qrels_test


def test_folds_partition_the_test_queries_and_hold_out_their_bucket():
    ds, _, _ = synthetic_dataset()
    split = make_split(ds, TopicEncoder(), buckets=4, seed=0)
    test_ids = set(ds.split("test").queries)
    for fold in split.folds:
        assert set(fold.interpolation) | set(fold.extrapolation) == test_ids
        assert not set(fold.interpolation) & set(fold.extrapolation)
        # Fold j's training data holds no bucket-j query.
        assert all(split.bucket_of[q] != fold.bucket for q in fold.train)
        assert all(split.bucket_of[q] == fold.bucket for q in fold.extrapolation)


def test_extrapolation_queries_are_farther_from_training_queries():
    ds, _, _ = synthetic_dataset()
    split = make_split(ds, TopicEncoder(), buckets=4, seed=0)
    for fold in split.folds:
        sims = fold.nearest_train_similarity
        assert sims["extrapolation"] < sims["interpolation"]


def test_seeded_and_repeatable():
    ds, _, _ = synthetic_dataset()
    a = make_split(ds, TopicEncoder(), buckets=4, seed=3)
    b = make_split(ds, TopicEncoder(), buckets=4, seed=3)
    assert a.bucket_of == b.bucket_of


def test_regime_scores_average_folds():
    ds, _, _ = synthetic_dataset()
    split = make_split(ds, TopicEncoder(), buckets=4, seed=0)
    per_query = {q: {"nDCG@10": 1.0 if "heart" in t else 0.0}
                 for q, t in ds.split("test").queries.items()}
    scores = regime_scores(split, per_query, "nDCG@10")
    assert scores["gap"] == pytest.approx(scores["interpolation"] - scores["extrapolation"])
    assert 0.0 <= scores["extrapolation"] <= 1.0


def test_written_split_loads_as_a_dataset(beir_dir, tmp_path):
    ds = load_dataset(beir_dir)
    # The tiny collection has only a test split: use it twice under two names, split by query.
    queries = ds.split("test").queries
    qrels = ds.split("test").qrels
    train_ids, test_ids = ["q1"], ["q2", "q3"]
    splits = {"train": Split({q: queries[q] for q in train_ids}, {q: qrels[q] for q in train_ids}),
              "test": Split({q: queries[q] for q in test_ids}, {q: qrels[q] for q in test_ids})}
    fake = Dataset("tiny", ds.corpus, ["train", "test"], splits.__getitem__, ds.path)

    class OneHot:
        name = "stub"

        def encode_queries(self, texts):
            return np.eye(len(texts), dtype=np.float32)

    split = make_split(fake, OneHot(), buckets=3, seed=0)
    out = write_split(split, fake, splits["train"].qrels, splits["test"].qrels, tmp_path / "s")
    reloaded = load_dataset(out)
    assert len(reloaded.corpus) == 6
    for fold in split.folds:
        assert set(reloaded.split(f"extrap-fold{fold.bucket}").qrels) == set(fold.extrapolation)
        assert set(reloaded.split(f"train-fold{fold.bucket}").qrels) == set(fold.train)
