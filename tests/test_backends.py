"""Encoder backends: ONNX Runtime and OpenVINO, fp32 and int8, against torch's vectors; exports
made once and cached; the index records the backend, and queries may use another precision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cormorant import cache
from cormorant.data import load_dataset
from cormorant.errors import CormorantError, PipelineError
from cormorant.retrieval.assemble import open_index, save_index
from cormorant.retrieval.backends import Runtime
from cormorant.retrieval.encoders import SentenceTransformerEncoder
from tests.conftest import QUERIES

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = ["what is a cormorant", "does vitamin d help with depression",
         "Statins lower cholesterol and reduce the risk of heart disease in adults. " * 4]

# The bar: int8 within cosine 0.99 of torch fp32, fp32 ONNX within 0.9999.
FLOOR = {"none": 0.9999, "int8": 0.99}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_backend_matches_torch_on_a_tiny_model(tiny_encoder, backend, quantize):
    if backend == "openvino":
        pytest.importorskip("openvino")
    reference = SentenceTransformerEncoder(str(tiny_encoder))
    fast = SentenceTransformerEncoder(str(tiny_encoder), runtime=Runtime(backend, quantize))
    for encode in ("encode_queries", "encode_documents"):
        want, got = getattr(reference, encode)(TEXTS), getattr(fast, encode)(TEXTS)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert cosines(want, got).min() >= FLOOR[quantize]


def test_export_is_made_once_and_cached(tiny_encoder):
    SentenceTransformerEncoder(str(tiny_encoder), runtime=Runtime("onnx", "int8"))
    before = {e.path for e in cache.entries("exports")}
    SentenceTransformerEncoder(str(tiny_encoder), runtime=Runtime("onnx", "int8"))
    assert {e.path for e in cache.entries("exports")} == before
    assert len(before) >= 2  # the fp32 export and the int8 one quantised from it


def test_static_int8_is_calibrated_and_close(tiny_encoder):
    reference = SentenceTransformerEncoder(str(tiny_encoder))
    fast = SentenceTransformerEncoder(str(tiny_encoder), runtime=Runtime("onnx", "int8-static"))
    assert cosines(reference.encode_documents(TEXTS), fast.encode_documents(TEXTS)).min() > 0.95


def test_runtime_is_part_of_the_encoder_identity(tiny_encoder):
    plain = SentenceTransformerEncoder(str(tiny_encoder)).settings
    fast = SentenceTransformerEncoder(str(tiny_encoder), runtime=Runtime("onnx", "int8")).settings
    assert "backend" not in plain  # old cache keys and indexes stay valid
    assert (fast["backend"], fast["quantize"]) == ("onnx", "int8")


@pytest.mark.parametrize("bad", [dict(backend="tpu"), dict(quantize="int4"),
                                 dict(backend="torch", quantize="int8"),
                                 dict(backend="onnx", dtype="float16")])
def test_bad_runtime_is_one_line(bad):
    with pytest.raises(CormorantError) as caught:
        Runtime(**bad)
    assert "\n" not in str(caught.value)


def test_fp16_on_a_cpu_is_refused(tiny_encoder):
    with pytest.raises(CormorantError, match="CUDA"):
        SentenceTransformerEncoder(str(tiny_encoder), device="cpu",
                                   runtime=Runtime(dtype="float16"))


def test_index_records_backend_and_queries_may_use_another_precision(tiny_encoder, beir_dir,
                                                                     tmp_path, isolated_cache):
    corpus = load_dataset(beir_dir).corpus
    model = str(tiny_encoder)
    out = save_index(f"dense(model={model}, backend=onnx)", corpus, tmp_path / "idx")
    meta = json.dumps([json.loads(p.read_text()) for p in out.rglob("meta.json")])
    assert '"backend": "onnx"' in meta and '"quantize": "none"' in meta
    built = open_index(out).pipeline
    assert built.query_encoder is built.encoder
    handle = open_index(out, pipeline=f"dense(model={model}, backend=onnx, query_quantize=int8)")
    reopened = handle.pipeline
    assert reopened.encoder.runtime == Runtime("onnx")  # documents as built, written ones too
    assert reopened.query_encoder.runtime == Runtime("onnx", "int8")
    fast, exact = reopened.search(QUERIES, k=3), built.search(QUERIES, k=3)
    assert all(list(fast[q])[0] == list(exact[q])[0] for q in QUERIES)
    with pytest.raises(PipelineError, match="backend"):
        open_index(out, pipeline=f"dense(model={model}, backend=torch)")


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_token_vectors_match_torch(tiny_encoder, quantize):
    from cormorant.retrieval.multivector import TokenEncoder

    reference = TokenEncoder(str(tiny_encoder)).encode_documents(TEXTS)
    fast = TokenEncoder(str(tiny_encoder), runtime=Runtime("onnx", quantize))
    assert fast.settings["quantize"] == quantize
    for want, got in zip(reference, fast.encode_documents(TEXTS), strict=True):
        assert want.shape == got.shape
        assert cosines(want, got).min() >= FLOOR[quantize] - 0.01 * (quantize == "int8")


def test_chamfer_stage_takes_a_backend(tiny_encoder, beir_dir, isolated_cache):
    from cormorant.retrieval.assemble import build_pipeline

    corpus = load_dataset(beir_dir).corpus
    plain = build_pipeline(f"chamfer(model={tiny_encoder})", corpus).search(QUERIES, k=3)
    fast = build_pipeline(f"chamfer(model={tiny_encoder}, backend=onnx)", corpus)
    assert fast.encoder.settings["backend"] == "onnx"
    ranked = fast.search(QUERIES, k=3)
    assert all(list(ranked[q]) == list(plain[q]) for q in QUERIES)


def test_cross_encoder_scores_match_torch(tiny_encoder, tmp_path):
    from sentence_transformers import CrossEncoder

    from cormorant.retrieval.rerank import CrossEncoderScorer

    folder = tmp_path / "ce"
    CrossEncoder(str(tiny_encoder), num_labels=1).save_pretrained(str(folder))
    pairs = [("vitamin d", text) for text in TEXTS]
    want = CrossEncoderScorer(str(folder)).score(pairs)
    got = CrossEncoderScorer(str(folder), runtime=Runtime("onnx")).score(pairs)
    assert np.allclose(want, got, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backend,quantize", [("onnx", "none"), ("onnx", "int8"),
                                              ("openvino", "none"), ("openvino", "int8")])
def test_minilm_backends_match_torch(backend, quantize):
    """all-MiniLM-L6-v2 (the default) on real abstracts: the issue's cosine bars."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    from tests.conftest import shared_dataset

    corpus = load_dataset(shared_dataset("scifact")).corpus
    texts = [d.contents for _, d in zip(range(48), corpus, strict=False)] + TEXTS
    reference = SentenceTransformerEncoder()
    fast = SentenceTransformerEncoder(runtime=Runtime(backend, quantize))
    assert cosines(reference.encode_documents(texts), fast.encode_documents(texts)).min() \
        >= FLOOR[quantize]
    assert cosines(reference.encode_queries(TEXTS), fast.encode_queries(TEXTS)).min() \
        >= FLOOR[quantize]


def test_search_says_when_queries_use_another_precision(tiny_encoder, beir_dir, tmp_path,
                                                        isolated_cache):
    from tests.cli_support import run_cli

    out = save_index(f"dense(model={tiny_encoder})", load_dataset(beir_dir).corpus,
                     tmp_path / "idx")
    same = run_cli("search", "--index", out, "cormorant")
    assert same.code == 0 and "note:" not in same.err
    mixed = run_cli("search", "--index", out, "--pipeline",
                    f"dense(model={tiny_encoder}, query_backend=onnx, query_quantize=int8)",
                    "cormorant")
    assert mixed.code == 0, mixed.err
    assert "note: dense encodes queries with onnx/int8, its documents were encoded with" \
           " torch/none" in mixed.err
