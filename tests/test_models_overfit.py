"""A tiny STDiT2 can fit one batch: the whole network trains end to end."""

from __future__ import annotations

import pytest
import torch

from models_helpers import inputs, tiny_config
from soraflow.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model(tiny_config(), seed=0).train()
    x, t, y, kw = inputs(batch=2, frames=3, height=4, width=4)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    x_mask = torch.tensor([[True, True, True], [False, True, True]])
    target = torch.randn(2, 8, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(x, t, y, mask, x_mask, **kw), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.5  # a fresh model outputs zeros: the loss starts at the target's variance
    assert min(losses[-10:]) < losses[0] / 10, (losses[0], losses[-10:])
