"""The shared training loop: schedule, decay groups, checkpoint round-trip, exact resume."""

from __future__ import annotations

import torch
from safetensors import safe_open
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from capgap.runs import RunDir
from capgap.train.checkpoint import (
    commit,
    is_sharded,
    load_checkpoint,
    save_checkpoint,
    staging_dir,
    write_shards,
)
from capgap.train.distributed import Parallel, StepModule
from capgap.train.loop import (
    OptimConfig,
    TrainConfig,
    lr_at,
    make_optimizer,
    param_groups,
    train,
)


class RandomBatches:
    """Batches that are a pure function of the step, like the real loader."""

    seq_len, batch_size = 16, 4

    def batch(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(1000 + step)
        return torch.randint(0, 64, (self.batch_size, self.seq_len), generator=g)


def tiny_model(seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=32, rotary_pct=0.25)
    return GPTNeoXForCausalLM(cfg)


def step_fn(model, x):
    return model(input_ids=x, labels=x).loss, {}


def test_lr_schedule_shape():
    cfg = OptimConfig(lr=1.0, warmup_frac=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0  # 10 warm-up steps, linear
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # cosine decays
    assert abs(lrs[-1] - 0.1) < 0.01


def test_no_decay_on_biases_and_norms():
    groups = param_groups(tiny_model(), 0.1)
    assert all(p.ndim >= 2 for p in groups[0]["params"])
    assert all(p.ndim == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0


def test_checkpoint_roundtrip_has_no_pickle(tmp_path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    model(input_ids=RandomBatches().batch(0), labels=RandomBatches().batch(0)).loss.backward()
    opt.step()
    save_checkpoint(tmp_path / "step-1", model, opt, {"step": 1})
    files = sorted(p.name for p in (tmp_path / "step-1").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    other = tiny_model(seed=1)
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3, foreach=False)
    assert load_checkpoint(tmp_path / "step-1", other, opt2)["step"] == 1
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"]) for k in s1)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = TrainConfig(tokens=16 * 4 * 12, micro_batch_size=4, checkpoint_every=5, threads=1,
                      keep_checkpoints=3)
    ref = tiny_model()
    train(ref, RandomBatches(), step_fn, cfg, RunDir.open(tmp_path / "ref"))

    # Stop after the step-10 checkpoint: a fresh run with a shorter budget would change the
    # schedule, so instead truncate a finished run back to its step-5 checkpoint.
    part = tiny_model()
    run = RunDir.open(tmp_path / "part")
    train(part, RandomBatches(), step_fn, cfg, run)
    for ck in run.checkpoints()[1:]:
        import shutil
        shutil.rmtree(ck)
    assert [c.name for c in run.checkpoints()] == ["step-00000005"]
    resumed = tiny_model(seed=7)  # different init: everything must come from the checkpoint
    train(resumed, RandomBatches(), step_fn, cfg, RunDir.open(tmp_path / "part", resume=True))
    for a, b in zip(ref.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    steps = [r["step"] for r in RunDir(tmp_path / "part", True, False).metrics() if "loss" in r]
    assert steps == sorted(steps) and steps[-1] == 12


def test_nonfinite_loss_stops_before_the_update_and_keeps_last_good(tmp_path):
    import pytest

    from capgap.errors import CapgapError
    from capgap.train.checkpoint import load_checkpoint

    calls = {"n": 0}

    def blows_up_at_step_6(model, x):
        calls["n"] += 1
        loss = model(input_ids=x, labels=x).loss
        return (loss * float("nan") if calls["n"] == 6 else loss), {}

    cfg = TrainConfig(tokens=16 * 4 * 12, micro_batch_size=4, checkpoint_every=2, threads=1,
                      keep_checkpoints=5)
    model, run = tiny_model(), RunDir.open(tmp_path / "r")
    with pytest.raises(CapgapError, match=r"at step 6.*last good checkpoint is .*step-00000004"):
        train(model, RandomBatches(), blows_up_at_step_6, cfg, run)
    assert [c.name for c in run.checkpoints()] == ["step-00000002", "step-00000004"]
    after_5 = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.isfinite(v).all() for v in after_5.values())  # the NaN step never applied
    at_4 = tiny_model(seed=3)
    load_checkpoint(run.checkpoints()[-1], at_4)
    assert not all(torch.equal(after_5[k], v) for k, v in at_4.state_dict().items())


def test_budget_below_one_step_is_an_error(tmp_path):
    import pytest

    from capgap.errors import CapgapError

    cfg = TrainConfig(tokens=16 * 4 - 1, micro_batch_size=4, threads=1)
    with pytest.raises(CapgapError, match="less than one optimizer step"):
        train(tiny_model(), RandomBatches(), step_fn, cfg, RunDir.open(tmp_path / "r"))


def test_sharded_layout_round_trips_ties_without_pickle(tmp_path):
    """The FSDP layout written and read by one process (DCP needs no process group): tied
    weights are stored once and stay tied, AdamW moments and step count come back, so the
    next update matches; every file is safetensors or JSON."""
    def tied(seed: int) -> tuple[StepModule, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, intermediate_size=64, tie_word_embeddings=True))
        step = StepModule(model, step_fn)
        return step, make_optimizer(step, OptimConfig(lr=1e-2))

    def update(step: StepModule, opt: torch.optim.Optimizer, k: int) -> None:
        step(RandomBatches().batch(k))[0].backward()
        opt.step()
        opt.zero_grad()

    a, opt_a = tied(0)
    for k in range(2):
        update(a, opt_a, k)
    path = tmp_path / "step-2"
    tmp = staging_dir(path)
    write_shards(tmp, get_model_state_dict(a), get_optimizer_state_dict(a, opt_a), {"step": 2}, 0)
    commit(tmp, path)
    assert is_sharded(path)
    files = [p for p in path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".safetensors", ".json"}
    (shard,) = (path / "shards").iterdir()
    with safe_open(str(shard), "pt") as f:  # the tied head is stored once
        assert ("model/model.lm_head.weight" in f.keys()) != (
            "model/model.model.embed_tokens.weight" in f.keys())

    b, opt_b = tied(1)
    par = Parallel("none", 1, 0, torch.device("cpu"))
    assert par.load_checkpoint(path, b, b.model, opt_b)["step"] == 2
    assert b.model.lm_head.weight is b.model.model.embed_tokens.weight
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)
    update(a, opt_a, 2)
    update(b, opt_b, 2)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)
