"""Instruction tuning: response-only labels, chat templates, chat data, the loader."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from capgap.errors import CapgapError
from capgap.recipe.sft import (
    IGNORE,
    ChatLoader,
    SFTConfig,
    chat_examples,
    encode_chat,
    load_conversations,
    use_chat_template,
)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CONV = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a river."},
        {"role": "assistant", "content": "The Thames."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "The Nile."}]


@pytest.fixture
def chat_tok(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)  # the session fixture stays template-free
    tok.chat_template = CHATML
    return tok


def test_labels_cover_exactly_the_assistant_turns(chat_tok):
    ids, labels = encode_chat(CONV, chat_tok, max_len=10_000)
    assert len(ids) == len(labels)
    full = chat_tok.apply_chat_template(CONV, tokenize=False)
    assert chat_tok.decode(ids) == full  # nothing lost or added
    trained = [i for i, y in zip(ids, labels, strict=True) if y != IGNORE]
    assert all(y in (IGNORE, i) for i, y in zip(ids, labels, strict=True))
    # The responses and their end-of-turn markers, and nothing of the prompts or headers.
    assert chat_tok.decode(trained) == "The Thames.<|im_end|>\nThe Nile.<|im_end|>\n"
    masked = chat_tok.decode([i for i, y in zip(ids, labels, strict=True) if y == IGNORE])
    assert "Name a river." in masked and "<|im_start|>assistant\n" in masked
    assert "Thames" not in masked and "Nile" not in masked


def test_cut_to_max_len(chat_tok):
    ids, labels = encode_chat(CONV, chat_tok, max_len=7)
    assert len(ids) == len(labels) == 7 and set(labels) == {IGNORE}  # the prompt comes first
    with pytest.raises(CapgapError, match="raise sft.max_len"):
        chat_examples(SFTConfig(max_len=7), chat_tok)  # nothing left to learn from


def test_no_chat_template_says_how_to_supply_one(tiny_tokenizer, tmp_path):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(CapgapError, match="--chat-template FILE") as e:
        use_chat_template(tok, None)
    assert "\n" not in str(e.value)
    (tmp_path / "t.jinja").write_text(CHATML)
    assert use_chat_template(tok, str(tmp_path / "t.jinja")).chat_template == CHATML


def test_template_that_is_not_turn_by_turn_is_refused(chat_tok):
    chat_tok.chat_template = "{{ messages | length }}" + CHATML  # the prefix changes per turn
    with pytest.raises(CapgapError, match="concatenation of its turns"):
        encode_chat(CONV, chat_tok, 100)


def test_chat_data_is_checked(tmp_path):
    assert len(load_conversations("sample")) == 20  # the bundled set
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": CONV}) + "\n"
                   + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(CapgapError, match=r"bad.jsonl:2: .*assistant turn"):
        load_conversations(str(bad))
    with pytest.raises(CapgapError, match="no such file"):
        load_conversations(str(tmp_path / "missing.jsonl"))


def test_loader_is_a_function_of_seed_and_step(chat_tok):
    examples = [encode_chat(CONV[:3], chat_tok, 256), encode_chat(CONV, chat_tok, 256)] * 3
    a = ChatLoader(examples, 256, 4, pad_id=0, seed=1)
    b = ChatLoader(examples, 256, 4, pad_id=0, seed=1)
    for step in (0, 5, 2):
        x, y = a.batch(step), b.batch(step)
        assert all(torch.equal(x[k], y[k]) for k in x)
    batch = a.batch(3)
    pads = batch["attention_mask"] == 0
    assert pads.any() and (batch["labels"][pads] == IGNORE).all()
    assert batch["input_ids"].shape == (4, 256)
