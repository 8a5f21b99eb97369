"""The statistics the gate's evaluation reports: a proportion's standard error and an
exact paired test, small enough to need no scipy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def standard_error(correct: int, n: int) -> float:
    """Binomial standard error of the accuracy `correct / n` (0 for an empty sample)."""
    if n == 0:
        return 0.0
    p = correct / n
    return math.sqrt(p * (1 - p) / n)


def exact_binomial_two_sided(b: int, c: int) -> float:
    """Two-sided exact p-value of b successes out of b + c at p = 1/2.

    Semantics:
        n = b + c; p = min(1, 2 * sum_{i <= min(b, c)} C(n, i) / 2**n)
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True, slots=True)
class PairedTest:
    """McNemar's exact test of two policies on the same prompts."""

    only_first: int
    """Prompts the first policy answers correctly and the second does not (b)."""
    only_second: int
    """Prompts the second policy answers correctly and the first does not (c)."""
    p_value: float


def mcnemar(first: Sequence[bool], second: Sequence[bool]) -> PairedTest:
    """Exact McNemar test: only the discordant prompts carry information on which is better."""
    if len(first) != len(second):
        raise ValueError(f"paired samples differ in length: {len(first)} vs {len(second)}")
    b = sum(x and not y for x, y in zip(first, second))
    c = sum(y and not x for x, y in zip(first, second))
    return PairedTest(b, c, exact_binomial_two_sided(b, c))
