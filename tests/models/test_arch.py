"""The architecture registry: every family resolves, counts itself right, refuses clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, MixtralConfig, T5Config

from capgap.errors import CapgapError
from capgap.models import ATTN_IMPLEMENTATION, FAMILIES, adapter_for, build_model
from capgap.models.arch import ParamTable, count_shape, matmul_params, supported_table
from capgap.models.params import count_params
from tests.models.conftest import tiny_config
from tests.prune.conftest import ARCHS
from tests.prune.conftest import tiny_config as prunable_config


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["base", "alt"])
def test_every_family_is_one_registry_entry_that_counts_itself(arch: str, variant: str) -> None:
    """The adapter's tables name every parameter transformers builds, and the analytic counts
    (total, non-embedding, matmul weights) equal counting the real modules."""
    config = prunable_config(arch, variant)
    model = build_model(config)
    adapter = adapter_for(model)
    assert config.model_type in adapter.model_types and adapter in FAMILIES
    ParamTable.from_model(model, adapter)  # raises on a parameter the tables do not know
    assert count_shape(config) == count_params(model)
    linear = {id(m.weight): m.weight.numel() for m in model.modules()
              if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"}
    lm_head = model.get_submodule(adapter.lm_head).weight
    assert matmul_params(config) == sum(linear.values()) + (lm_head.numel() if id(lm_head) not in linear else 0)


def test_every_model_type_has_exactly_one_adapter() -> None:
    types = [t for a in FAMILIES for t in a.model_types]
    assert len(types) == len(set(types))
    assert len({a.name for a in FAMILIES}) == len(FAMILIES)


def test_supported_table_lists_every_family_once() -> None:
    table = supported_table()
    assert table.count("\n") == len(FAMILIES) + 1  # header, rule, one row each
    for adapter in FAMILIES:
        assert f"| {adapter.title} |" in table


@pytest.mark.parametrize("config", [BertConfig(), T5Config()], ids=["bert", "t5"])
def test_unsupported_arch_names_the_supported_ones(config) -> None:  # noqa: ANN001
    with pytest.raises(CapgapError, match=r"unsupported architecture '(bert|t5)'; supported: gpt2, gpt_neox"):
        build_model(config)


def test_mixture_of_experts_says_what_is_missing() -> None:
    with pytest.raises(CapgapError, match=r"'mixtral': mixture-of-experts FFNs \(expert pruning"):
        adapter_for(MixtralConfig())


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "llama"])
def test_sdpa_is_deterministic_and_matches_eager(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(kind)).eval()
    assert model.config._attn_implementation == ATTN_IMPLEMENTATION == "sdpa"
    eager = AutoModelForCausalLM.from_config(model.config, attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    ids = torch.randint(0, 100, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding exercises the masked path
    with torch.no_grad():
        first = model(ids, attention_mask=mask).logits
        second = model(ids, attention_mask=mask).logits
        reference = eager(ids, attention_mask=mask).logits
    assert torch.equal(first, second)
    torch.testing.assert_close(first[:, 5:], reference[:, 5:])


def test_docs_table_is_the_registrys() -> None:
    page = (Path(__file__).parents[2] / "docs" / "models.md").read_text(encoding="utf-8")
    block = page.split("<!-- capgap archs: begin -->\n", 1)[1].split("\n<!-- capgap archs: end -->", 1)[0]
    assert block == supported_table(), "docs/models.md's table is stale: paste `capgap archs` into it"


def test_archs_command_prints_the_table(capsys) -> None:  # noqa: ANN001
    from capgap.cli import main

    assert main(["archs"]) == 0
    assert capsys.readouterr().out.strip() == supported_table()
    assert main(["archs", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["family"] for line in lines] == [a.name for a in FAMILIES]
