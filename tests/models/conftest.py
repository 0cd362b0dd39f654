"""Tiny configs (hidden 32, 2 layers, vocab 100) and a word-level tokenizer for model tests."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

VOCAB = 100
HIDDEN = 32
LAYERS = 2
HEADS = 4
KV_HEADS = 2
FFN = 48
SEQ = 16
IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


def tiny_config(kind: str, tie: bool | None = None) -> PretrainedConfig:
    """A tiny config of ``kind`` (gpt2, gpt_neox, llama, mistral, qwen2)."""
    tied = {} if tie is None else {"tie_word_embeddings": tie}
    if kind == "gpt2":
        return GPT2Config(
            vocab_size=VOCAB,
            n_positions=SEQ,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_inner=FFN,
            **IDS,
            **tied,
        )
    if kind == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            max_position_embeddings=SEQ,
            **IDS,
            **tied,
        )
    llama_like = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[kind]
    return llama_like(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        intermediate_size=FFN,
        max_position_embeddings=SEQ,
        **IDS,
        **tied,
    )


def tiny_tokenizer(n_words: int = 40) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of ``n_words + 3`` tokens ("w0" ... plus <unk>, <s>, </s>)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i + 3 for i in range(n_words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()
