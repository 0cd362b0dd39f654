"""Divergences written from their definitions on plain Python floats (p = teacher, q = student).

Independent of capgap's implementation: shared by the divergence and objective tests.
"""

from __future__ import annotations

import math


def softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(x - top) for x in row]
    return [x / sum(e) for x in e]


def kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def mix(a: list[float], b: list[float], w: float) -> list[float]:
    return [w * x + (1 - w) * y for x, y in zip(a, b, strict=True)]


# p = teacher, q = student, written from the definitions (not from the implementation).
REFERENCE = {
    "soft_ce": lambda p, q, **kw: -sum(x * math.log(y) for x, y in zip(p, q, strict=True)),
    "forward_kl": lambda p, q, **kw: kl(p, q),
    "reverse_kl": lambda p, q, **kw: kl(q, p),
    "jsd": lambda p, q, beta=0.5: beta * kl(p, mix(p, q, beta)) + (1 - beta) * kl(q, mix(p, q, beta)),
    "skew_forward_kl": lambda p, q, skew=0.1: kl(p, mix(p, q, skew)),
    "skew_reverse_kl": lambda p, q, skew=0.1: kl(q, mix(q, p, skew)),
    "tv": lambda p, q, **kw: 0.5 * sum(abs(x - y) for x, y in zip(p, q, strict=True)),
}
