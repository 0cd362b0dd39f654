"""Each divergence against an independent float64 formula on explicit probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from distill_reference import REFERENCE, softmax
from hypothesis import given, settings
from hypothesis import strategies as st

from capgap.distill import get_divergence, list_divergences, register_divergence
from capgap.distill import losses as L
from capgap.errors import CapgapError

CASES = [
    ("soft_ce", {}), ("forward_kl", {}), ("reverse_kl", {}), ("jsd", {}), ("jsd", {"beta": 0.1}),
    ("jsd", {"beta": 0.9}), ("skew_forward_kl", {}), ("skew_forward_kl", {"skew": 0.5}),
    ("skew_reverse_kl", {}), ("skew_reverse_kl", {"skew": 0.3}), ("tv", {}),
]


def reference(name: str, student: torch.Tensor, teacher: torch.Tensor, **kw: float) -> torch.Tensor:
    rows = [
        REFERENCE[name](softmax(t.tolist()), softmax(s.tolist()), **kw)
        for s, t in zip(student.double(), teacher.double(), strict=True)
    ]
    return torch.tensor(rows, dtype=torch.float64)


def test_registry_holds_exactly_the_documented_divergences() -> None:
    assert set(REFERENCE) <= set(list_divergences())


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_matches_reference(name: str, kw: dict) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = 3 * torch.randn(5, 11, generator=g), 3 * torch.randn(5, 11, generator=g)
    out = get_divergence(name)(s, t, **kw)
    assert out.shape == (5,) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(name, s, t, **kw), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_low_precision_inputs_are_computed_in_fp32(name: str) -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    out = get_divergence(name)(s.bfloat16(), t.bfloat16())
    assert out.dtype == torch.float32
    ref = reference(name, s.bfloat16().float(), t.bfloat16().float())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


logit_rows = st.lists(
    st.floats(-30, 30, allow_nan=False, allow_infinity=False, width=32), min_size=2, max_size=12
)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(REFERENCE)))
def test_nonnegative_and_zero_at_equality(data: st.DataObject, name: str) -> None:
    s = data.draw(logit_rows)
    t = data.draw(st.lists(st.floats(-30, 30, width=32), min_size=len(s), max_size=len(s)))
    s_, t_ = torch.tensor([s]), torch.tensor([t])
    fn = get_divergence(name)
    assert fn(s_, t_).item() >= -1e-5
    same = fn(t_, t_).item()
    if name == "soft_ce":  # cross-entropy of p with itself is its entropy
        p = softmax(t)
        entropy = -sum(x * math.log(x) for x in p if x > 0)
        assert same == pytest.approx(entropy, abs=1e-4)
    else:
        assert abs(same) <= 1e-5


def test_forward_kl_is_soft_ce_minus_teacher_entropy() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 13, generator=g), torch.randn(6, 13, generator=g)
    log_p = torch.log_softmax(t, -1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    torch.testing.assert_close(L.forward_kl(s, t), L.soft_ce(s, t) - entropy)


def test_jsd_sides_teacher_is_p() -> None:
    """Small beta -> beta * KL(teacher || student); beta near 1 -> (1 - beta) * KL(student || teacher)."""
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 7, generator=g).double(), torch.randn(4, 7, generator=g).double()
    fkl, rkl = L.forward_kl(s, t), L.reverse_kl(s, t)
    assert ((fkl - rkl).abs() > 0.1 * fkl).any()  # the two sides are distinguishable here
    eps = 1e-3  # fp32 inside: smaller eps drowns in rounding; the O(eps) bias fits rtol
    torch.testing.assert_close(L.jsd(s, t, beta=eps) / eps, fkl, rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(L.jsd(s, t, beta=1 - eps) / eps, rkl, rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(L.jsd(s, t), L.jsd(t, s))  # beta = 0.5 is the symmetric JSD


def test_zero_skew_is_plain_kl() -> None:
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    torch.testing.assert_close(L.skew_forward_kl(s, t, skew=0.0), L.forward_kl(s, t))
    torch.testing.assert_close(L.skew_reverse_kl(s, t, skew=0.0), L.reverse_kl(s, t))


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_extreme_logits_stay_finite(name: str) -> None:
    g = torch.Generator().manual_seed(5)
    s = (1e3 * torch.randn(3, 50, generator=g)).requires_grad_()
    t = 1e3 * torch.randn(3, 50, generator=g)
    t[:, :10] = -1e4  # teacher gives these tokens probability exp(-1e4) == 0 in fp32
    out = get_divergence(name)(s, t)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(s.grad).all()


def test_bad_names_and_arguments_are_user_errors() -> None:
    with pytest.raises(CapgapError, match="soft_ce.*tv|tv.*soft_ce"):
        get_divergence("kl_forward")
    with pytest.raises(CapgapError, match=r"\(0, 1\)"):
        L.jsd(torch.zeros(1, 3), torch.zeros(1, 3), beta=0.0)
    with pytest.raises(CapgapError, match=r"\[0, 1\)"):
        L.skew_forward_kl(torch.zeros(1, 3), torch.zeros(1, 3), skew=1.0)
    with pytest.raises(CapgapError, match="beta"):
        L.KDObjective(divergence="skew_forward_kl", div_kwargs={"beta": 0.5})
    with pytest.raises(CapgapError, match="alpha"):
        L.KDObjective(alpha=1.5)
    with pytest.raises(CapgapError, match="temperature"):
        L.KDObjective(temperature=0.0)


def test_register_a_new_divergence() -> None:
    @register_divergence("test_sq_logprob")
    def sq(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        d = torch.log_softmax(student_logits, -1) - torch.log_softmax(teacher_logits, -1)
        return d.pow(2).sum(-1)

    try:
        assert get_divergence("test_sq_logprob") is sq
        obj = L.KDObjective(alpha=0.0, divergence="test_sq_logprob")
        _, kd = obj.sums(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
        assert kd.item() == 0.0
        with pytest.raises(ValueError, match="already registered"):
            register_divergence("test_sq_logprob")(L.soft_ce)
    finally:
        L._DIVERGENCES.pop("test_sq_logprob")
