"""Gather and sum-scatter over the first dimension, the two index operations of message passing.

Sums use torch's native ``index_add``: torch-scatter (the optional ``scatter`` extra) was measured
no faster for sums on CPU, so gnnpot does not call it; PyG uses it on its own when it is installed.
Gathers use ``index_select``, whose backward is one ``index_add`` (fancy indexing ``src[index]``
goes through the slower ``index_put`` with accumulation).
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
