"""Gather and sum-scatter over the first dimension, the two index operations of message passing.

Sums use torch's native ``index_add``: torch-scatter (the optional ``scatter`` extra) was measured
no faster for sums on CPU, so gnnpot does not call it; PyG uses it on its own when it is installed.
Gathers use ``index_select``, whose backward is one ``index_add`` (fancy indexing ``src[index]``
goes through the slower ``index_put`` with accumulation).

:func:`materialize` marks a node-level tensor that the compiled path should write out in its own
contiguous buffer, with its gradient (see there).
"""

from __future__ import annotations

import torch
from torch import Tensor


def gather(src: Tensor, index: Tensor) -> Tensor:
    """Rows ``src[index]`` of ``src`` [N, ...] for ``index`` [M]: [M, ...]."""
    return src.index_select(0, index)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` [M, ...] into ``dim_size`` rows by ``index`` [M]."""
    out = torch.zeros((dim_size, *src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add_(0, index, src)


@torch.library.custom_op("gnnpot::materialize", mutates_args=())
def materialize(x: Tensor) -> Tensor:
    """A contiguous copy of ``x``; in the compiled path, a buffer of its own, and so is its gradient.

    Written as a custom operator because TorchInductor keeps an operator it cannot see into as a
    separate kernel with a realised input, where it would fuse a ``clone`` away. Use it on the
    summed messages before an e3nn ``Linear``: the gradient of that ``Linear`` comes out
    transposed (``[N, 2l + 1, channels]``), and Inductor otherwise fused the transpose into
    the per-edge gather of :func:`scatter_sum`'s backward, which then read each edge's row with
    strided single-element loads. With the node gradient copied once ([N, D], small), MACE small
    on 108 Cu atoms (compiled, one thread, beside two busy processes) took 620-660 ms per
    energy-and-forces call against 697-722 without, with equal forces. On the idle machine at two
    threads (``docs/benchmarks_mace.md``) the MACE training step gained 36 % and the Cu108 MD call
    did not change. Eager, it is one copy of [N, D].
    """
    return x.clone(memory_format=torch.contiguous_format)


@materialize.register_fake
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


materialize.register_autograd(lambda ctx, grad: materialize(grad))
