"""Planner: sizes against published counts, FLOPs against torch's counter, the paper's run."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.models.params import count_params_from_config
from capgap.plan import ModelShape, load_spec, memory_options, plan, spec_names
from capgap.plan.estimate import measured_flops
from capgap.units import parse_size
from tests.prune.conftest import tiny_config

MODERN = ("qwen3", "gemma2", "gemma3_text", "phi3", "olmo2")

PUBLISHED = {  # total parameters as the model cards / papers state them
    "llama2-7b": 6.74e9, "llama2-13b": 13.0e9, "minima-3b-shape": 2.9e9, "gpt2": 124e6,
    "gpt2-medium": 355e6, "gpt2-large": 774e6, "gpt2-xl": 1.56e9, "pythia-70m": 70.4e6,
    "pythia-160m": 162e6, "pythia-410m": 405e6, "pythia-1b": 1.01e9, "pythia-1.4b": 1.41e9,
    "pythia-2.8b": 2.78e9, "pythia-6.9b": 6.86e9, "pythia-12b": 11.85e9,
}


def test_builtin_specs_match_published_sizes():
    assert set(spec_names()) == set(PUBLISHED)
    for name, size in PUBLISHED.items():
        shape = ModelShape.of(load_spec(name))
        assert shape.params == pytest.approx(size, rel=0.02), name
    assert count_params_from_config(load_spec("llama2-7b")).total == 6_738_415_616


TINY = [
    LlamaConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=160),
    GPTNeoXConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=256),
    GPT2Config(vocab_size=96, n_embd=64, n_layer=2, n_head=4, n_positions=64),
    *[tiny_config(arch) for arch in MODERN],
]


@pytest.mark.parametrize("config", TINY, ids=["llama-gqa", "gpt_neox", "gpt2", *MODERN])
def test_flops_match_flop_counter(config):
    """Forward and forward+backward FLOPs equal what FlopCounterMode counts (exact matmuls)."""
    torch.manual_seed(0)
    # eager attention: FlopCounterMode does not see the CPU SDPA kernel, only plain matmuls
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    shape, batch, seq = ModelShape.of(config), 2, 32
    assert measured_flops(model, batch, seq, train=False) == batch * seq * shape.forward_flops(seq)
    assert measured_flops(model, batch, seq, train=True) == 3 * batch * seq * shape.forward_flops(seq)


def test_paper_run_is_plausible():
    """LLaMA2-7B -> MiniMA-3B on 126B tokens, 16 A100-80GB: weeks, not days or years."""
    p = plan(load_spec("llama2-7b"), load_spec("minima-3b-shape"), 126e9, gpus=16, gpu_mem_gib=80)
    assert 3.5e21 < p.flops["total"] < 5.5e21
    assert 10 < p.wall_days < 60  # at 40 % MFU: ~26 days
    assert p.choice is not None
    # a 40 GB card cannot hold DDP's 16 bytes/param of a 2.9B student plus the teacher
    small = plan(load_spec("llama2-7b"), load_spec("minima-3b-shape"), 126e9, 16, 40)
    assert small.choice is not None and small.choice.strategy != "DDP"


def test_least_sharded_that_fits_is_chosen():
    t, s = ModelShape.of(load_spec("llama2-13b")), ModelShape.of(load_spec("llama2-7b"))
    options = memory_options(t, s, gpus=8, gpu_mem_gib=80, seq_len=4096, micro_batch=1)
    totals = [o.total for o in options if not o.checkpointing]
    assert totals == sorted(totals, reverse=True)  # more sharding, less memory
    p = plan(load_spec("llama2-13b"), load_spec("llama2-7b"), 1e9, 8, 80)
    assert p.choice == next(o for o in p.options if o.fits)
    assert p.choice.strategy != "DDP"  # 16 x 6.7B = 108 GB alone
    none = plan(load_spec("llama2-13b"), load_spec("llama2-7b"), 1e9, 1, 16)
    assert none.choice is None


def test_cli_json_and_errors(capsys):
    assert main(["plan", "--teacher", "pythia-1.4b", "--student-params", "560M", "--tokens", "2B",
                 "--gpus", "2", "--gpu-mem", "24", "--seq-len", "2048", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["student_shape"]["error"] == pytest.approx(0, abs=0.01)
    assert out["choice"]["fits"] and out["gpu_hours"] > 0
    assert main(["plan", "--teacher", "nope-7b", "--student-params", "1B", "--tokens", "1B",
                 "--gpus", "1", "--gpu-mem", "80"]) == 2
    assert "built-ins" in capsys.readouterr().err
    with pytest.raises(CapgapError):
        parse_size("lots")
    assert parse_size("126B") == 126e9 and parse_size("350M") == 350e6
