"""Family YAMLs: validation errors, shipped ladders, and the configs they build."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from capgap.errors import CapgapError
from capgap.models import build_model, count_params, list_families, load_family
from capgap.models.family import FAMILY_DIR

SHIPPED = ["gpt2-ladder", "gpt2-micro", "llama-micro", "pythia-ladder", "pythia-micro", "pythia-small"]


def write_family(tmp_path: Path, **changes: object) -> Path:
    """A valid family YAML (pythia-micro) with top-level ``changes`` applied."""
    data = yaml.safe_load((FAMILY_DIR / "pythia-micro.yaml").read_text()) | changes
    path = tmp_path / "fam.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_families_listed() -> None:
    assert list_families() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_family_sizes_strictly_increase(name: str) -> None:
    family = load_family(name)
    assert 5 <= len(family.sizes) <= 7
    counts = list(family.param_counts().values())
    totals = [c.total for c in counts]
    non_emb = [c.non_embedding for c in counts]
    assert all(a < b for a, b in zip(totals, totals[1:], strict=False)), totals
    assert all(a < b for a, b in zip(non_emb, non_emb[1:], strict=False)), non_emb


@pytest.mark.parametrize("name", SHIPPED)
def test_family_smallest_size_builds_and_runs(name: str) -> None:
    family = load_family(name)
    size = family.size_names[0]
    config = family.build_config(size, vocab_size=64, bos_token_id=1, eos_token_id=2)
    model = build_model(config)
    assert count_params(model) == family.param_counts(vocab_size=64)[size]
    logits = model(input_ids=torch.randint(0, 64, (1, 8))).logits
    assert logits.shape == (1, 8, 64)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, None)


def test_pythia_micro_is_the_measured_ladder() -> None:
    family = load_family("pythia-micro")
    assert (family.arch, family.seq_len, family.vocab_size) == ("gpt_neox", 128, 4096)
    ladder = [(s.name, s.hidden, s.layers) for s in family.sizes]
    assert ladder == [("T0", 64, 2), ("T1", 96, 3), ("T2", 128, 4), ("T3", 192, 4), ("T4", 256, 5)]
    for size in family.size_names:
        dims = family.dims(size)
        assert (dims.head_dim, dims.ffn) == (16, 4 * dims.hidden)


@pytest.mark.parametrize("name", ["pythia-micro", "pythia-small"])
def test_pythia_parallel_residual_and_partial_rotary(name: str) -> None:
    family = load_family(name)
    for size in family.size_names:
        config = family.build_config(size)
        assert config.use_parallel_residual is True
        assert config.rope_parameters["partial_rotary_factor"] == 0.25
        assert config.tie_word_embeddings is False
    model = build_model(family.build_config(family.size_names[0], vocab_size=64))
    # 16-dim heads, a quarter rotated: 4 dims, i.e. 2 rotary frequencies.
    assert model.gpt_neox.rotary_emb.inv_freq.numel() == 2


def test_llama_family_uses_gqa_swiglu_and_tied_head() -> None:
    family = load_family("llama-micro")
    for size in family.size_names:
        config = family.build_config(size)
        assert config.num_key_value_heads < config.num_attention_heads
        assert config.num_attention_heads % config.num_key_value_heads == 0
        assert config.intermediate_size % 16 == 0
        assert abs(config.intermediate_size / config.hidden_size - 8 / 3) < 0.2
        assert config.tie_word_embeddings is True
    assert family.dims("L3").ffn == 512  # 8/3 × 192 exactly: float noise must not round up


def test_gpt2_family_learned_positions_and_tied_head() -> None:
    family = load_family("gpt2-micro")
    config = family.build_config(family.size_names[0])
    assert config.n_positions == family.seq_len
    assert config.tie_word_embeddings is True
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)


def test_unknown_top_level_key_names_key_and_file(tmp_path: Path) -> None:
    path = write_family(tmp_path, seqlen=64)
    with pytest.raises(CapgapError, match=r"fam\.yaml.*'seqlen'.*did you mean 'seq_len'"):
        load_family(path)


def test_unknown_size_key_names_key_and_file(tmp_path: Path) -> None:
    path = write_family(tmp_path, sizes=[{"name": "A", "hidden": 64, "layer": 2}])
    with pytest.raises(CapgapError, match=r"fam\.yaml.*unknown key 'layer'"):
        load_family(path)


def test_unknown_default_key_names_key_and_file(tmp_path: Path) -> None:
    path = write_family(tmp_path, defaults={"head_dims": 16})
    with pytest.raises(CapgapError, match=r"fam\.yaml.*unknown key 'head_dims'"):
        load_family(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arch": "bert"}, "must be one of"),
        ({"defaults": {"kv_group": 2}}, "kv_group applies to llama"),
        ({"arch": "gpt2"}, "rotary_pct applies to gpt_neox"),
        ({"sizes": [{"name": "A", "hidden": 60, "layers": 2}]}, "not divisible by head_dim"),
        ({"sizes": [{"name": "A", "hidden": 64, "layers": 2, "kv_heads": 2}]}, "kv_heads"),
        ({"sizes": [{"name": "A", "hidden": 64, "layers": 2}] * 2}, "duplicate size names"),
        ({"sizes": []}, "at least one size"),
        ({"sizes": [{"name": "A", "hidden": 64, "layers": 0}]}, "sizes.A.layers must be positive"),
        ({"defaults": {"head_dim": 0}}, "defaults.head_dim must be positive"),
    ],
)
def test_invalid_family_error_names_rule_and_file(
    tmp_path: Path, changes: dict, message: str
) -> None:
    path = write_family(tmp_path, **changes)
    with pytest.raises(CapgapError, match=message) as err:
        load_family(path)
    assert str(path) in str(err.value)


def test_unknown_family_name_lists_shipped() -> None:
    with pytest.raises(CapgapError, match="shipped: gpt2-ladder, gpt2-micro, llama-micro"):
        load_family("pythia-huge")


def test_size_overrides_and_bad_requests() -> None:
    family = load_family("llama-micro")
    family.sizes[0].heads, family.sizes[0].kv_heads, family.sizes[0].ffn = 2, 1, 100
    dims = family.dims("L0")
    assert (dims.heads, dims.kv_heads, dims.head_dim, dims.ffn) == (2, 1, 32, 100)
    with pytest.raises(CapgapError, match="no size 'L9'"):
        family.dims("L9")
    with pytest.raises(CapgapError, match="eos_token_id=4096 out of range"):
        family.build_config("L0", eos_token_id=4096)
    assert family.build_config("L0", vocab_size=300).vocab_size == 300


@pytest.mark.parametrize("name", ["pythia-ladder", "gpt2-ladder"])
def test_ladder_families_are_shaped_for_the_trained_regime(name: str) -> None:
    """The regime issue 18 asks for, checked from the shapes alone: at least 7 teachers
    spanning at least 8x in steps of at most 1.5x, embeddings at most 35 % of each."""
    from capgap.results.regime import describe_regime

    family = load_family(name)
    assert family.vocab_size == 512
    counts = [count_params(build_model(family.build_config(s))) for s in family.size_names]
    params = [c.total for c in counts]
    steps = [b / a for a, b in zip(params, params[1:], strict=False)]
    assert len(params) >= 7 and params[-1] / params[0] >= 8 and max(steps) <= 1.5
    teachers = [{"name": s, "params": c.total, "tokens_per_param": 20.0,
                 "embedding_fraction": 1 - c.non_embedding / c.total}
                for s, c in zip(family.size_names, counts, strict=True)]
    assert max(t["embedding_fraction"] for t in teachers) <= 0.35
    assert describe_regime(teachers)["name"] == "trained, low-embedding"
