"""Edge-pair helpers: radial work on one edge of each reversed pair (see :mod:`gnnpot.keys`).

The length of edge ``2k + 1`` equals that of edge ``2k`` (its reverse), so anything that depends
on the length alone is computed for the even edges and shared. Every helper takes ``paired``
and does the plain per-edge thing when it is False.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pair_lengths(edge_len: Tensor, paired: bool) -> Tensor:
    """The lengths radial functions need: [E // 2] (even edges) when paired, else [E]."""
    return edge_len[0::2] if paired else edge_len


def pair_mul(edge_values: Tensor, radial: Tensor, paired: bool) -> Tensor:
    """``edge_values`` [E, ...] times ``radial`` of :func:`pair_lengths` rows.

    Each row of ``radial`` is used for both edges of its pair when ``paired``.
    """
    return edge_values * pair_expand(radial, paired)


def pair_expand(radial: Tensor, paired: bool) -> Tensor:
    """``radial`` of :func:`pair_lengths` rows to one row per edge [E, ...]."""
    if not paired:
        return radial
    # A gather, not expand + reshape: its backward is one index_add, where the reshape's backward
    # (a sum over the pair axis) compiled to a kernel measured 50x slower on CPU.
    index = torch.arange(2 * radial.shape[0], device=radial.device) // 2
    return radial.index_select(0, index)


def edges_paired(edge_index: Tensor, edge_shift: Tensor) -> bool:
    """Whether edge ``2k + 1`` is edge ``2k`` reversed for every ``k`` (a few vector compares)."""
    if edge_index.shape[1] % 2:
        return False
    # torch.equal answers with one kernel and no tensor of flags
    return torch.equal(edge_index[:, 0::2], edge_index[:, 1::2].flip(0)) and torch.equal(
        edge_shift[0::2], edge_shift[1::2].neg()
    )
