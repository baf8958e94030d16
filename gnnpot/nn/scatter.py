"""Sum aggregation over an index with torch's native ``index_add``.

torch-scatter (the optional ``scatter`` extra) was measured no faster than ``index_add`` for
sums on CPU, so gnnpot does not call it; PyG uses it on its own when it is installed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` [M, ...] into ``dim_size`` rows by ``index`` [M]."""
    out = torch.zeros((dim_size, *src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add_(0, index, src)
