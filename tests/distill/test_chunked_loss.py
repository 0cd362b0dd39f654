"""The chunked, head-fused loss equals the naive full-logits loss in value and gradients."""

from __future__ import annotations

import pytest
import torch
from distill_models import ARCHS, VOCAB, batch, pair, tiny_lm
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from capgap.distill import check_shared_vocab, distill_loss, naive_distill_loss
from capgap.errors import CapgapError
from capgap.train.loss import lm_loss, mean_lm_loss


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    return {arch: pair(arch) for arch in ARCHS}


def loss_and_grads(fn, student, teacher, *args, **kw):
    student.zero_grad(set_to_none=True)
    out = fn(student, teacher, *args, **kw)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters()}
    return out, grads


def assert_same(a, b, ga, gb, **tol) -> None:
    assert a.n_tokens == b.n_tokens
    torch.testing.assert_close(a.loss, b.loss, **tol)
    torch.testing.assert_close(a.ce, b.ce, **tol)
    if a.kd is None:
        assert b.kd is None
    else:
        torch.testing.assert_close(a.kd, b.kd, **tol)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], msg=lambda m, n=name: f"{n}: {m}", **tol)


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 1024])  # 7 and 16 do not divide N = 19
@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_equals_naive(pairs, arch: str, chunk_size: int) -> None:
    student, teacher = pairs[arch]
    ids, labels, mask = batch()
    a, ga = loss_and_grads(naive_distill_loss, student, teacher, ids, labels, mask)
    b, gb = loss_and_grads(distill_loss, student, teacher, ids, labels, mask, chunk_size=chunk_size)
    assert b.n_tokens == 19 and a.kd is not None
    assert all(g.abs().sum() > 0 for n, g in gb.items() if "bias" not in n)  # every param trained
    assert_same(a, b, ga, gb)


@pytest.mark.parametrize(
    ("divergence", "kw"),
    [("soft_ce", {}), ("forward_kl", {}), ("reverse_kl", {}), ("jsd", {"beta": 0.3}),
     ("skew_forward_kl", {"skew": 0.2}), ("skew_reverse_kl", {}), ("tv", {})],
)
def test_every_divergence_chunked_equals_naive(pairs, divergence: str, kw: dict) -> None:
    student, teacher = pairs["llama"]
    ids, labels, mask = batch(seed=1)
    opts = dict(alpha=0.3, temperature=2.0, divergence=divergence, **kw)
    a, ga = loss_and_grads(naive_distill_loss, student, teacher, ids, labels, mask, **opts)
    b, gb = loss_and_grads(distill_loss, student, teacher, ids, labels, mask, chunk_size=5, **opts)
    assert_same(a, b, ga, gb)


def test_head_bias_gets_its_gradient() -> None:
    student, teacher = pair("llama")
    torch.manual_seed(3)
    student.set_output_embeddings(torch.nn.Linear(32, VOCAB, bias=True))
    ids, labels, mask = batch(seed=2)
    a, ga = loss_and_grads(naive_distill_loss, student, teacher, ids, labels, mask)
    b, gb = loss_and_grads(distill_loss, student, teacher, ids, labels, mask, chunk_size=4)
    assert "lm_head.bias" in gb
    assert_same(a, b, ga, gb)


@pytest.mark.parametrize("arch", ARCHS)
def test_alpha_one_is_hf_ce_and_runs_no_teacher(pairs, arch: str) -> None:
    student, _ = pairs[arch]
    ids, _, _ = batch(seed=3)

    class Exploding(torch.nn.Module):
        def __getattr__(self, name: str):
            raise AssertionError(f"teacher touched: {name}")

    hf = student(input_ids=ids, labels=ids).loss  # HF's own shifted, mean-reduced CE
    for teacher in (None, Exploding()):
        out = distill_loss(student, teacher, ids, alpha=1.0, chunk_size=6)
        torch.testing.assert_close(out.loss, hf)
        assert out.kd is None and out.n_tokens == ids.numel() - ids.shape[0]
    torch.testing.assert_close(lm_loss(student, ids, chunk_size=6).loss, hf)


def test_alpha_zero_is_pure_kd(pairs) -> None:
    student, teacher = pairs["gpt_neox"]
    ids, labels, mask = batch(seed=4)
    out = distill_loss(student, teacher, ids, labels, mask, alpha=0.0, divergence="reverse_kl")
    torch.testing.assert_close(out.loss, out.kd)


def test_teacher_gets_no_gradient_and_no_grad_mode_works(pairs) -> None:
    student, teacher = pairs["gpt2"]
    teacher.requires_grad_(True)  # even if the caller forgot to freeze it
    try:
        ids, labels, mask = batch(seed=5)
        out = distill_loss(student, teacher, ids, labels, mask, chunk_size=4)
        out.loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        with torch.no_grad():
            ref = naive_distill_loss(student, teacher, ids, labels, mask)
            got = distill_loss(student, teacher, ids, labels, mask, chunk_size=4)
        torch.testing.assert_close(got.loss, ref.loss)
        assert not got.loss.requires_grad
    finally:
        teacher.requires_grad_(False)


def test_low_precision_teacher() -> None:
    student, teacher = pair("llama")
    teacher = teacher.to(torch.bfloat16)
    ids, labels, mask = batch(seed=6)
    a, ga = loss_and_grads(naive_distill_loss, student, teacher, ids, labels, mask)
    b, gb = loss_and_grads(distill_loss, student, teacher, ids, labels, mask, chunk_size=5)
    assert b.kd.dtype == torch.float32
    assert_same(a, b, ga, gb, rtol=2e-2, atol=1e-3)  # bf16 matmul blocking may differ


def test_mean_lm_loss_weighs_every_window_alike(pairs) -> None:
    student, _ = pairs["gpt_neox"]
    student.zero_grad(set_to_none=True)  # the fixture is shared with tests that backpropagate
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        whole = float(lm_loss(student, ids).loss)
    assert mean_lm_loss(student, [ids[:2], ids[2:]]) == pytest.approx(whole, rel=1e-5)
    assert not any(p.grad is not None for p in student.parameters())


def test_no_valid_token(pairs) -> None:
    student, teacher = pairs["llama"]
    ids, _, mask = batch(seed=7)
    out, grads = loss_and_grads(distill_loss, student, teacher, ids, torch.full_like(ids, -100), mask)
    assert out.n_tokens == 0 and out.loss.item() == 0.0
    assert all(torch.count_nonzero(g) == 0 for g in grads.values())


def test_no_full_vocabulary_tensor_is_kept_for_backward(pairs) -> None:
    """Autograd saves nothing [rows, V]-shaped beyond one chunk (the naive path does)."""
    student, teacher = pairs["llama"]
    ids = torch.randint(0, VOCAB, (4, 33))  # N = 128 rows > hidden sizes and chunk
    chunk = 8

    def biggest_vocab_tensor(fn, **kw) -> int:
        sizes = [0]

        def pack(x: torch.Tensor) -> torch.Tensor:
            if VOCAB in x.shape:
                sizes.append(x.numel() // VOCAB)
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            fn(student, teacher, ids, **kw)
        return max(sizes)

    assert biggest_vocab_tensor(naive_distill_loss) >= 128
    assert biggest_vocab_tensor(distill_loss, chunk_size=chunk) <= max(chunk, 32)  # [C, V] or W [V, H]


@settings(max_examples=10, deadline=None)
@given(chunk_size=st.integers(1, 40), seed=st.integers(0, 1000))
def test_value_does_not_depend_on_chunking(chunk_size: int, seed: int) -> None:
    student, teacher = _GPT2
    ids, labels, mask = batch(seed=seed)
    with torch.no_grad():
        ref = distill_loss(student, teacher, ids, labels, mask, chunk_size=10_000)
        got = distill_loss(student, teacher, ids, labels, mask, chunk_size=chunk_size)
    torch.testing.assert_close(got.loss, ref.loss)


_GPT2 = pair("gpt2")


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<unk>", *words])}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")))


def test_vocabulary_mismatch_is_refused(pairs) -> None:
    student, teacher = pairs["llama"]
    ids, labels, mask = batch()
    other = tiny_lm("llama", hidden=48, vocab=VOCAB + 3).eval()
    for fn in (distill_loss, naive_distill_loss):
        with pytest.raises(CapgapError, match="share a vocabulary.*304.*301"):
            fn(student, other, ids, labels, mask)
    a, b = word_tokenizer(["the", "cat"]), word_tokenizer(["the", "dog"])
    check_shared_vocab(student, teacher, a, word_tokenizer(["the", "cat"]))
    with pytest.raises(CapgapError, match="tokenizers differ"):
        check_shared_vocab(student, teacher, a, b)
    with pytest.raises(CapgapError, match="LM head only 301"):
        check_shared_vocab(student, teacher, word_tokenizer([f"w{i}" for i in range(400)]))


def test_user_errors(pairs) -> None:
    student, teacher = pairs["gpt_neox"]
    ids, labels, mask = batch()
    with pytest.raises(CapgapError, match="needs a teacher"):
        distill_loss(student, None, ids)
    teacher.train()
    try:
        with pytest.raises(CapgapError, match="eval mode"):
            distill_loss(student, teacher, ids)
    finally:
        teacher.eval()
    with pytest.raises(CapgapError, match="chunk_size"):
        distill_loss(student, teacher, ids, chunk_size=0)
    with pytest.raises(CapgapError, match="labels"):
        distill_loss(student, teacher, ids, labels[:, :4])
    with pytest.raises(CapgapError, match="unknown divergence"):
        distill_loss(student, teacher, ids, divergence="kl")
    with pytest.raises(CapgapError, match="skew"):
        distill_loss(student, teacher, ids, divergence="jsd", skew=0.1)
    scaled = tiny_lm("llama")
    scaled.config.logit_scale = 0.5  # Cohere-style scaling is not reproduced: refused
    with pytest.raises(CapgapError, match="logit_scale"):
        lm_loss(scaled, ids)
    with pytest.raises(CapgapError, match="no linear LM head"):
        lm_loss(student.gpt_neox, ids)


class _AutogradOnly:
    """The same objective without its closed-form gradient: the autograd path."""

    def __init__(self, objective) -> None:  # noqa: ANN001
        self.objective = objective
        self.needs_teacher = objective.needs_teacher

    def sums(self, *a):  # noqa: ANN002, ANN201
        return self.objective.sums(*a)

    def combine(self, *a):  # noqa: ANN002, ANN201
        return self.objective.combine(*a)


class _Counted(_AutogradOnly):
    """The same objective with its closed form, counting the chunks that took it."""

    calls = 0

    def sums_and_grad(self, *a):  # noqa: ANN002, ANN201
        self.calls += 1
        return self.objective.sums_and_grad(*a)


@pytest.mark.parametrize("cap", [None, 3.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_closed_form_gradient_equals_autograd(alpha: float, cap: float | None) -> None:
    """The fast path (CE and soft CE at tau = 1: d/dz = a (q - onehot) + c (q - p)) gives the
    autograd path's loss and gradients (hidden rows, head weight and bias), soft-cap included."""
    from capgap.distill.losses import KDObjective
    from capgap.train.loss import NextTokenCE, _chunk_loop

    g = torch.Generator().manual_seed(0)
    n, h, v = 37, 8, 50
    hidden = torch.randn(n, h, generator=g)
    weight, bias = torch.randn(v, h, generator=g), torch.randn(v, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    t_logits = 3 * torch.randn(n, v, generator=g)

    class Teacher:
        def logits(self, rows: slice) -> torch.Tensor:
            return t_logits[rows]

    for objective, teacher in ((KDObjective(alpha=alpha), Teacher()), (NextTokenCE(), None)):
        counted = _Counted(objective)
        args = (hidden, weight, bias, teacher, targets)
        rest = (n, 16, cap, (True, True, True))
        fast = _chunk_loop(*args, counted, *rest)
        slow = _chunk_loop(*args, _AutogradOnly(objective), *rest)
        assert counted.calls == 3  # ceil(37 / 16) chunks, every one in closed form
        for x, y in zip(fast[:3], slow[:3], strict=True):
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        for x, y in zip(fast[3], slow[3], strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_softmax_grad_skips_ignored_targets() -> None:
    from capgap.train.loss import IGNORE_INDEX, softmax_grad

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 9, generator=g, requires_grad=True)
    p = torch.softmax(torch.randn(6, 9, generator=g), -1)
    targets = torch.tensor([1, IGNORE_INDEX, 3, 8, IGNORE_INDEX, 0])
    loss = (0.3 * torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            - 0.2 * (p * torch.log_softmax(logits, -1)).sum())
    loss.backward()
    mine = softmax_grad(torch.log_softmax(logits.detach(), -1), targets, 0.3, p, 0.2)
    torch.testing.assert_close(mine, logits.grad)


def test_cpu_passes_are_cache_sized_and_shared_by_a_vocabulary() -> None:
    from capgap.train.loss import rows_per_pass

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [rows_per_pass(1024, v, cpu) for v in (512, 4096, 16384)] == [256, 128, 128]
    assert rows_per_pass(1024, 49152, cpu) == 1024  # 128 rows of 49k logits: past 8 MiB
    assert rows_per_pass(64, 512, cpu) == 64  # never more than the memory cap
    assert rows_per_pass(1024, 4096, gpu) == 1024  # accelerators: the cap itself


def test_autograd_kernel_is_the_earlier_loss_and_agrees(pairs, monkeypatch) -> None:
    """CAPGAP_LOSS_KERNEL=autograd runs the loss as before the closed form (no closed-form
    call, chunk_size rows per pass); both kernels agree to fp32 rounding; a bad name is refused."""
    from capgap.distill import losses

    student, teacher = pairs[ARCHS[0]]
    ids, labels, mask = batch()
    fast, g_fast = loss_and_grads(distill_loss, student, teacher, ids, labels, mask)
    monkeypatch.setenv("CAPGAP_LOSS_KERNEL", "autograd")
    monkeypatch.setattr(losses.KDObjective, "sums_and_grad",
                        lambda *a: pytest.fail("closed form used under the autograd kernel"))
    slow, g_slow = loss_and_grads(distill_loss, student, teacher, ids, labels, mask)
    assert_same(fast, slow, g_fast, g_slow, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("CAPGAP_LOSS_KERNEL", "fused")
    with pytest.raises(CapgapError, match="CAPGAP_LOSS_KERNEL"):
        distill_loss(student, teacher, ids, labels, mask)
