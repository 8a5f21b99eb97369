"""Feature pooling: how the prompt's output states become the gate's input."""

from __future__ import annotations

import pytest
import torch

from routers.features import POOLINGS, feature_dim, pool


def test_poolings() -> None:
    hidden = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # 3 tokens, hidden size 4
    assert torch.equal(pool(hidden, "mean"), torch.tensor([4.0, 5.0, 6.0, 7.0]))
    assert torch.equal(pool(hidden, "last"), hidden[-1])
    assert torch.equal(pool(hidden, "mean+last"), torch.cat([hidden.mean(dim=0), hidden[-1]]))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_feature_dim_is_the_pooled_length(pooling: str) -> None:
    hidden = torch.randn(5, 576)
    assert pool(hidden, pooling).shape == (feature_dim(576, pooling),)  # type: ignore[arg-type]
