"""The offline teacher cache: exact at k = V - 1, a bound below it, built once, reused."""

from __future__ import annotations

import pytest
import torch
from distill_models import VOCAB, pair
from test_engine import cfg_for
from test_engine import pair as engine_pair  # noqa: F401 - a fixture

from capgap.data import PackedLoader
from capgap.data.cache import cache_dir
from capgap.distill import distill_loss
from capgap.distill.cache import TeacherCacheConfig, build_or_load, teacher_topk
from capgap.distill.engine import distill
from capgap.distill.losses import TopKTeacher, coarse_grain
from capgap.errors import CapgapError

DIVERGENCES = ["soft_ce", "forward_kl", "reverse_kl", "jsd", "tv"]


def ids(b: int = 3, t: int = 12) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(0))


def loss_and_grads(student, **kw) -> tuple[torch.Tensor, list[torch.Tensor]]:  # noqa: ANN001
    student.zero_grad(set_to_none=True)
    out = distill_loss(student, input_ids=ids(), chunk_size=7, **kw)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in student.parameters()]


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_all_but_one_token_is_exact(divergence):
    """With k = V - 1 the "other" bucket is one token: the cached loss is the full loss."""
    student, teacher = pair("gpt_neox")
    topk = teacher_topk(teacher, ids(), VOCAB - 1, temperature=2.0)
    kw = {"alpha": 0.3, "temperature": 2.0, "divergence": divergence}
    online, g_online = loss_and_grads(student, teacher=teacher, **kw)
    cached, g_cached = loss_and_grads(student, teacher=None, teacher_topk=topk, **kw)
    torch.testing.assert_close(cached, online)
    for a, b in zip(g_cached, g_online, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_small_k_keeps_top_terms_exact_and_bounds_kl():
    student, teacher = pair("llama")
    x = ids()
    topk = teacher_topk(teacher, x, 8, temperature=1.0)
    with torch.no_grad():
        s_logits, t_logits = student(input_ids=x).logits, teacher(input_ids=x).logits  # [B, T, V]
    log_q, log_p = s_logits.log_softmax(-1), t_logits.log_softmax(-1)
    torch.testing.assert_close(topk.logp, log_p.gather(-1, topk.indices))
    torch.testing.assert_close(topk.other.exp(), 1 - topk.logp.exp().sum(-1))
    s, t = coarse_grain(s_logits.flatten(0, 1), TopKTeacher(*(f.flatten(0, 1) for f in topk)))
    torch.testing.assert_close(s[:, :8], log_q.gather(-1, topk.indices).flatten(0, 1))
    kl_full = (log_p.exp() * (log_p - log_q)).sum(-1).flatten()
    kl_coarse = (t.exp() * (t - s)).sum(-1)
    assert (kl_coarse <= kl_full + 1e-6).all() and (kl_coarse < kl_full).any()


def test_built_once_reused_and_read_back(tmp_path, tiny_token_store, monkeypatch):
    import capgap.distill.cache as cache_mod

    _, teacher = pair("gpt_neox")
    loader = PackedLoader(tiny_token_store.train.astype("int64") % VOCAB, seq_len=16,
                          batch_size=4, seed=3)
    cfg = TeacherCacheConfig(enabled=True, top_k=5, dtype="fp32")
    builds = []
    real = cache_mod._build
    monkeypatch.setattr(cache_mod, "_build", lambda *a: builds.append(1) or real(*a))
    first = build_or_load(teacher, loader, 6, cfg, 1.0, "data", root=tmp_path)
    again = build_or_load(teacher, loader, 6, cfg, 1.0, "data", root=tmp_path)
    assert first.path == again.path and len(builds) == 1
    for step in (0, 5):
        want = teacher_topk(teacher, loader.batch(step), 5, 1.0)
        got = again.lookup(loader.window_indices(step))
        assert torch.equal(got.indices, want.indices)
        torch.testing.assert_close(got.logp, want.logp)
    with pytest.raises(CapgapError, match="lacks window"):
        again.lookup(loader.window_indices(50))  # beyond the budget it was built for
    other = build_or_load(teacher, loader, 6, TeacherCacheConfig(top_k=6), 1.0, "data",
                          root=tmp_path)
    assert other.path != first.path and len(builds) == 2  # k is part of the key


def test_engine_shares_one_entry_across_students(engine_pair, tmp_path):  # noqa: F811
    teacher, student, root = engine_pair
    entries = lambda: set((cache_dir() / "teacher").glob("*"))  # noqa: E731
    before = entries() if (cache_dir() / "teacher").exists() else set()
    online = distill(cfg_for(teacher, student, root / "corpus.txt"), tmp_path / "online")
    runs = []
    for i, init in enumerate(["pretrained", "scratch"]):
        cfg = cfg_for(teacher, student, root / "corpus.txt")
        cfg.init, cfg.teacher_cache = init, TeacherCacheConfig(True, top_k=299, dtype="fp32")
        runs.append(distill(cfg, tmp_path / f"cached{i}"))
    assert len(entries() - before) == 1
    # k = V - 1 in fp32: the cached run is the online run up to float rounding.
    assert runs[0].val_loss == pytest.approx(online.val_loss, rel=1e-4)
    assert runs[1].val_loss != runs[0].val_loss
