"""A tiny random causal generator for SEAL tests: a byte-level BPE tokenizer trained here on the
test collection (no download) and a 2-layer Llama with a 300-token vocabulary."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DOCS, QUERIES


def make_tiny_generator(path: Path, seed: int = 0, vocab: int = 300) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [f" {t} @@ {x}" for _, t, x in DOCS] + list(QUERIES.values())
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(texts * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, initializer_range=0.5,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_seq2seq(path: Path, seed: int = 0) -> Path:
    """A 1+1-layer T5 over the same tiny tokenizer: the seq2seq path of the generator."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    causal = make_tiny_generator(path / "tokenizer-source", seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(causal)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=1,
                      num_decoder_layers=1, num_heads=2, initializer_factor=5.0,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(path / "model")
    tokenizer.save_pretrained(path / "model")
    return path / "model"
