import subprocess
import sys

import pytest

from cormorant import registry
from cormorant.errors import CormorantError


def test_builtins_register_through_entry_points():
    assert {"bm25", "bm25.lucene", "rm3", "dense"} <= set(registry.names("cormorant.retrievers"))
    assert registry.names("cormorant.fusers") == ["combsum", "rrf"]
    assert {"beir", "bright", "msmarco"} <= set(registry.names("cormorant.datasets"))


def test_unknown_name_lists_known_ones():
    with pytest.raises(CormorantError, match=r"unknown retriever 'nope'; known: bm25, bm25.lucene"):
        registry.get("cormorant.retrievers", "nope")


def test_import_stays_light():
    code = ("import sys, cormorant, cormorant.pipeline, cormorant.data, cormorant.cli;"
            "heavy = {'torch', 'faiss', 'jnius', 'fastapi', 'sentence_transformers'};"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
