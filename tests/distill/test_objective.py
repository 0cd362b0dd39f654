"""The objective on full logits: shift, ignore_index / padding masks, normalisation, temperature."""

from __future__ import annotations

import math

import pytest
import torch
from distill_reference import REFERENCE, softmax

from capgap.distill import KDObjective, distill_loss_from_logits
from capgap.errors import CapgapError
from capgap.train.loss import shift_and_flatten

B, T, V = 3, 7, 11


def inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    s = 2 * torch.randn(B, T, V, generator=g)
    t = 2 * torch.randn(B, T, V, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[1, 1:4] = -100
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, -2:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    return s, t, labels, mask


def reference_loss(s, t, labels, mask, alpha, tau, name, t2, **kw) -> tuple[float, float, float, int]:
    """Loop over (b, t): position t predicts labels[b, t + 1]; float64 throughout."""
    ce = kd = 0.0
    n = 0
    for b in range(B):
        for i in range(T - 1):
            if labels[b, i + 1] == -100 or not (mask[b, i] and mask[b, i + 1]):
                continue
            q1 = softmax(s[b, i].double().tolist())
            ce -= math.log(q1[int(labels[b, i + 1])])
            p = softmax((t[b, i].double() / tau).tolist())
            q = softmax((s[b, i].double() / tau).tolist())
            kd += (tau**2 if t2 else 1.0) * REFERENCE[name](p, q, **kw)
            n += 1
    return alpha * ce / n + (1 - alpha) * kd / n, ce / n, kd / n, n


@pytest.mark.parametrize(
    ("name", "kw"),
    [("soft_ce", {}), ("forward_kl", {}), ("reverse_kl", {}), ("jsd", {"beta": 0.3}),
     ("skew_forward_kl", {}), ("skew_reverse_kl", {}), ("tv", {})],
)
@pytest.mark.parametrize(("alpha", "tau", "t2"), [(0.5, 1.0, True), (0.3, 2.0, True), (0.7, 0.5, False)])
def test_masked_objective_matches_loop(name, kw, alpha, tau, t2) -> None:
    s, t, labels, mask = inputs()
    obj = KDObjective(alpha, tau, name, kw, scale_kd_by_t2=t2)
    loss, ce, kd, n = distill_loss_from_logits(s, t, labels, mask, obj)
    ref = reference_loss(s, t, labels, mask, alpha, tau, name, t2, **kw)
    assert n == ref[3] == 10  # 18 positions - 3 ignored - 2 right pad - 3 left pad
    for got, want in zip((loss, ce, kd), ref[:3], strict=True):
        torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_temperature_scaling() -> None:
    s, t, labels, mask = inputs(1)
    def run(tau: float, t2: bool) -> tuple[torch.Tensor, ...]:
        return distill_loss_from_logits(s, t, labels, mask, KDObjective(0.5, tau, scale_kd_by_t2=t2))[:3]
    _, ce1, kd1 = run(1.0, True)
    _, ce3, kd3 = run(3.0, True)
    _, ce3_raw, kd3_raw = run(3.0, False)
    torch.testing.assert_close(ce1, ce3)  # hard-label CE never sees the temperature
    torch.testing.assert_close(kd3, 9.0 * kd3_raw)
    torch.testing.assert_close(run(1.0, False)[2], kd1)  # tau = 1: the option changes nothing
    assert not torch.isclose(kd1, kd3_raw)


def test_alpha_one_is_plain_ce_without_teacher() -> None:
    s, _, labels, mask = inputs(2)
    loss, ce, kd, n = distill_loss_from_logits(s, None, labels, mask, KDObjective(alpha=1.0))
    valid = (labels[:, 1:] != -100) & mask[:, 1:].bool() & mask[:, :-1].bool()
    want = torch.nn.functional.cross_entropy(s[:, :-1][valid], labels[:, 1:][valid])
    torch.testing.assert_close(loss, want)
    assert kd is None and n == int(valid.sum())


def test_no_valid_token_gives_zero_loss_and_gradient() -> None:
    s, t, labels, mask = inputs(3)
    s.requires_grad_()
    loss, ce, kd, n = distill_loss_from_logits(s, t, torch.full_like(labels, -100), mask, KDObjective())
    loss.backward()
    assert n == 0 and loss.item() == 0.0 and ce.item() == 0.0 and kd.item() == 0.0
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_shift_alignment_and_errors() -> None:
    x = torch.arange(2 * 4).view(2, 4, 1)  # row value = flat position
    labels = torch.tensor([[10, 11, 12, 13], [20, 21, -100, 23]])
    rows, targets = shift_and_flatten(x, labels)
    assert rows.squeeze(-1).tolist() == [0, 1, 2, 4, 6]  # position t -> label t + 1
    assert targets.tolist() == [11, 12, 13, 21, 23]
    with pytest.raises(CapgapError, match="labels shape"):
        shift_and_flatten(x, labels[:, :3])
    with pytest.raises(CapgapError, match="share a vocabulary"):
        distill_loss_from_logits(torch.zeros(1, 3, 5), torch.zeros(1, 3, 6), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(CapgapError, match="needs teacher"):
        distill_loss_from_logits(torch.zeros(1, 3, 5), None, torch.zeros(1, 3, dtype=torch.long))
