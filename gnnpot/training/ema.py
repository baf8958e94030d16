"""Exponential moving average of a model's weights, used for validation, testing and saving."""

from __future__ import annotations

import copy

import torch
from torch import nn

from gnnpot.models import ForceField, clone_model


class EMA(nn.Module):
    """A frozen copy of ``model`` whose parameters follow ``p_ema <- d p_ema + (1 - d) p``.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so that the early average is not
    dominated by the random initial weights. Buffers (E0, scale, ...) are copied, not averaged.

    Args:
        model: the model being trained.
        decay: the long-run decay, in ``[0, 1)``; 0.99 averages over about 100 steps.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = _fresh_copy(model)
        self.module.requires_grad_(False)
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        n = int(self.num_updates)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        # Pair by name: the two modules need not list their tensors in the same order.
        params = dict(model.named_parameters())
        ema_params = dict(self.module.named_parameters())
        if params.keys() != ema_params.keys():
            raise ValueError(f"EMA holds parameters {sorted(ema_params.keys() ^ params.keys())} the model lacks")
        names = list(params)
        torch._foreach_lerp_([ema_params[n] for n in names], [params[n].detach() for n in names], 1.0 - decay)
        ema_buffers = dict(self.module.named_buffers())
        for name, buffer in model.named_buffers():
            ema_buffers[name].copy_(buffer)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        """Call the averaged module."""
        return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        """Decay and number of updates, for ``repr``."""
        return f"decay={self.decay}, num_updates={int(self.num_updates)}"


def _fresh_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the same weights (see :func:`gnnpot.models.clone_model`)."""
    return clone_model(model) if isinstance(model, ForceField) else copy.deepcopy(model)
