"""Students distilled in lockstep end bitwise where the same runs made one by one end (fp32,
CPU), share one teacher forward per batch, resume from their own checkpoints, and fail alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from test_engine import cfg_for, save_tiny

from capgap.distill import lockstep
from capgap.distill.chunked import TeacherRows
from capgap.distill.engine import distill
from capgap.distill.lockstep import distill_lockstep
from capgap.errors import CapgapError


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer, tiny_corpus):
    root = tmp_path_factory.mktemp("lockstep")
    (root / "corpus.txt").write_text("\n\n".join(d.text for d in tiny_corpus.documents))
    teacher = save_tiny(root / "teacher", tiny_tokenizer, 48, 2, 0)
    students = [save_tiny(root / f"s{i}", tiny_tokenizer, 16 * (i + 1), 1, i + 1) for i in range(2)]
    return root, teacher, students


def group(models, tokens: int | None = None):
    """Two distilled students (soft CE, reverse KL), one baseline, one scratch student."""
    root, teacher, (s0, s1) = models
    corpus = root / "corpus.txt"
    cfgs = [cfg_for(teacher, s0, corpus), cfg_for(teacher, s1, corpus, divergence="reverse_kl"),
            cfg_for(teacher, s0, corpus, alpha=1.0),
            dataclasses.replace(cfg_for(teacher, s1, corpus), init="scratch")]
    for c in cfgs:
        c.train.tokens = tokens or c.train.tokens
        c.train.checkpoint_every = 2
    return cfgs


def weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(next((out / "model").glob("*.safetensors"))))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_lockstep_equals_separate_runs_and_runs_the_teacher_once(models, tmp_path, monkeypatch):
    cfgs = group(models)
    for i, c in enumerate(cfgs):
        distill(c, tmp_path / f"alone{i}")
    forwards, heads = [], []
    original, logits = lockstep.SharedTeacherLoader.batch, TeacherRows.logits

    def counting(self, step):
        out = original(self, step)
        forwards.append(self.forwards)
        return out

    def counting_heads(self, rows):
        heads.append((rows.start, rows.stop) in self._chunks)
        return logits(self, rows)

    monkeypatch.setattr(lockstep.SharedTeacherLoader, "batch", counting)
    monkeypatch.setattr(TeacherRows, "logits", counting_heads)
    results = distill_lockstep([(c, tmp_path / f"together{i}") for i, c in enumerate(cfgs)])
    assert all(not isinstance(r, Exception) for r in results)
    for i in range(len(cfgs)):
        assert_same_weights(tmp_path / f"alone{i}", tmp_path / f"together{i}")
        assert results[i].val_loss == distill(cfgs[i], tmp_path / f"alone{i}", resume=True).val_loss
    steps = cfgs[0].train.tokens // (8 * 32)
    assert max(forwards) == steps  # one teacher forward per step for the 3 distilled students
    assert heads.count(False) == steps and heads.count(True) == 2 * steps  # its head once, too


def test_resumed_members_at_different_steps_catch_up(models, tmp_path):
    """One student killed after its first checkpoint, one never started: the group resumes
    the first where it stopped and still ends equal to separate runs."""
    cfgs = group(models)[:2]
    for i, c in enumerate(cfgs):
        distill(c, tmp_path / f"alone{i}")
    short = dataclasses.replace(cfgs[0], train=dataclasses.replace(cfgs[0].train))
    partial = tmp_path / "together0"
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after(short, partial, steps=3)
    assert (partial / "checkpoints").is_dir()
    results = distill_lockstep([(c, tmp_path / f"together{i}") for i, c in enumerate(cfgs)])
    assert all(not isinstance(r, Exception) for r in results)
    for i in range(2):
        assert_same_weights(tmp_path / f"alone{i}", tmp_path / f"together{i}")


def _interrupt_after(cfg, out, steps: int) -> None:
    """Run ``cfg`` into ``out`` and stop it (as a kill would) after ``steps`` steps."""
    from capgap.train import loop

    calls = {"n": 0}
    original = loop.Trainer._advance

    def stop(self):
        if calls["n"] == steps:
            raise KeyboardInterrupt
        calls["n"] += 1
        original(self)

    loop.Trainer._advance = stop
    try:
        distill(cfg, out)
    finally:
        loop.Trainer._advance = original


def test_members_must_share_data_and_teacher(models, tmp_path):
    root, teacher, (s0, s1) = models
    cfgs = group(models)[:2]
    cfgs[1].train.seed = 7
    with pytest.raises(CapgapError, match="must share train.seed"):
        distill_lockstep([(c, tmp_path / f"r{i}") for i, c in enumerate(cfgs)])
    other = dataclasses.replace(group(models)[1], teacher=str(s1))
    with pytest.raises(CapgapError, match="must share teacher"):
        distill_lockstep([(group(models)[0], tmp_path / "a"), (other, tmp_path / "b")])
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_failing_member_fails_alone(models, tmp_path):
    cfgs = group(models)[:2]
    cfgs[1].train.optim.lr = float("inf")  # its first step diverges
    results = distill_lockstep([(c, tmp_path / f"r{i}") for i, c in enumerate(cfgs)])
    assert isinstance(results[1], CapgapError) and "became" in str(results[1])
    assert not isinstance(results[0], Exception)
    assert (tmp_path / "r0" / "DONE.json").is_file()
    assert not (tmp_path / "r1" / "DONE.json").exists()


def test_members_of_different_budgets_share_the_prefix(models, tmp_path, monkeypatch):
    """A smaller budget reads a prefix of the larger one's batches: in one group the teacher
    runs once per step of the longest member, and each member still ends where it would
    alone (its own schedule over its own budget)."""
    long, short = group(models)[0], group(models)[1]
    short.train.tokens = long.train.tokens // 2
    for i, c in enumerate((long, short)):
        distill(c, tmp_path / f"alone{i}")
    forwards = []
    original = lockstep.SharedTeacherLoader.batch

    def counting(self, step):
        out = original(self, step)
        forwards.append(self.forwards)
        return out

    monkeypatch.setattr(lockstep.SharedTeacherLoader, "batch", counting)
    results = distill_lockstep([(long, tmp_path / "together0"), (short, tmp_path / "together1")])
    assert all(not isinstance(r, Exception) for r in results)
    for i in range(2):
        assert_same_weights(tmp_path / f"alone{i}", tmp_path / f"together{i}")
    assert max(forwards) == long.train.tokens // (8 * 32)
