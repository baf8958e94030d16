"""Exponential moving average of a model's weights, used for validation, testing and saving."""

from __future__ import annotations

import copy

import torch
from torch import nn


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
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        n = int(self.num_updates)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        ema_params = list(self.module.parameters())
        params = list(model.parameters())
        if len(ema_params) != len(params):
            raise ValueError(f"EMA holds {len(ema_params)} parameters, model has {len(params)}")
        torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        self.num_updates += 1

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 (forwards to the averaged module)
        return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, num_updates={int(self.num_updates)}"
