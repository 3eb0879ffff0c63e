"""The EMA's update rule, on a small module with a frozen parameter."""

import torch
from torch import nn

from soraflow.training.ema import EMA


def _module() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    m[1].bias.requires_grad_(False)
    return m


def test_update_follows_the_closed_form_over_several_steps():
    m = _module()
    ema = EMA(m, decay=0.9)
    start = {k: v.clone() for k, v in ema.shadow.items()}
    assert "1.bias" not in ema.shadow  # frozen parameters are not averaged
    expected = dict(start)
    for step in range(3):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.5 * (step + 1))
        ema.update(m)
        params = dict(m.named_parameters())
        expected = {k: 0.9 * v + 0.1 * params[k].detach() for k, v in expected.items()}
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[k], v, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(ema.shadow[k], start[k])


def test_decay_one_keeps_and_decay_zero_copies_exactly():
    m = _module()
    keep, copy = EMA(m, decay=1.0), EMA(m, decay=0.0)
    before = {k: v.clone() for k, v in keep.shadow.items()}
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0).add_(1.0)
    keep.update(m)
    copy.update(m)
    params = dict(m.named_parameters())
    for k in before:
        assert torch.equal(keep.shadow[k], before[k])
        assert torch.equal(copy.shadow[k], params[k].detach())
