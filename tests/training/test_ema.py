"""EMA: the averaged copy follows the weights with a ramped decay; buffers are copied."""

import pytest
import torch
from torch import nn

from gnnpot.training import EMA


def test_ema_update_and_buffers():
    model = nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    ema.update(model)  # n = 0: decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.module.weight, torch.full((2,), 0.1 * 1.0 + 0.9 * 2.0))
    assert torch.equal(ema.module.running_mean, model.running_mean)
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.module.weight, model.weight, atol=1e-6)
    assert int(ema.num_updates) == 201 and "decay=0.9" in repr(ema)


def test_ema_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        EMA(nn.Linear(1, 1), decay=1.0)


def test_ema_of_paper_size_nequip_matches_a_fresh_build():
    """Deep-copying e3nn's compiled tensor products adds constant buffers; the EMA must not."""
    from gnnpot import build_model

    model = build_model("nequip", cutoff=4.0, elements=["H"])
    ema = EMA(model, decay=0.9)
    assert ema.module.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    ema.update(model)  # decay 0.1: the average moves 0.9 of the way
    first = next(iter(ema.module.parameters()))
    assert torch.allclose(first, next(iter(model.parameters())) - 0.1)
