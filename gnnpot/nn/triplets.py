"""Triplets of atoms ``k -> j -> i`` from a (batched, periodic) edge list, for angular layers.

The convention is the one in :mod:`gnnpot.keys`: a triplet joins the edge ``j -> k`` (centre
``j``) to the edge ``i -> j`` (centre ``i``), with the angle at ``j``. Edges are told apart by
index, not by atom pair, so periodic images of one atom give separate triplets.
"""

from __future__ import annotations

import torch
from torch import Tensor


def build_triplets(edge_index: Tensor, edge_shift: Tensor, num_atoms: int) -> tuple[Tensor, Tensor]:
    """All pairs of edges ``(j -> k, i -> j)`` that share the atom ``j``, without the edge straight back.

    For every edge ``e = i -> j`` every edge centred on ``j`` is taken, except its own reverse
    ``j -> i`` with ``shift_kj == -shift_ji`` (the same image of ``i``). An edge ``j -> i`` to a
    *different* image of ``i`` is kept, as is ``k == i`` in a cell smaller than the cutoff.
    Works on a batched graph as it is: edges of different frames never share an atom.

    Args:
        edge_index: [2, E] int64, row 0 centre ``i``, row 1 neighbour ``j``.
        edge_shift: [E, 3] int64 integer cell shifts of the neighbour's image.
        num_atoms: N, the number of atoms (nodes) the edges index into.

    Returns:
        ``(triplet_kj, triplet_ji)``: [T] int64 edge indices, sorted by ``triplet_ji``.
    """
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    if edge_shift.shape != (edge_index.shape[1], 3):
        raise ValueError(f"edge_shift must have shape [{edge_index.shape[1]}, 3], got {tuple(edge_shift.shape)}")
    centre, neighbour = edge_index[0], edge_index[1]
    device = edge_index.device
    # Edges grouped by their centre atom: the edges j -> k of atom j are order[start[j]:start[j] + degree[j]].
    order = torch.argsort(centre, stable=True)
    degree = torch.bincount(centre, minlength=num_atoms)
    start = torch.cumsum(degree, 0) - degree
    # Edge i -> j pairs with each of the degree[j] edges centred on j.
    count = degree[neighbour]
    num_candidates = int(count.sum())
    triplet_ji = torch.repeat_interleave(torch.arange(centre.numel(), device=device), count, output_size=num_candidates)
    first = torch.cumsum(count, 0) - count
    rank = torch.arange(num_candidates, device=device) - first[triplet_ji]
    triplet_kj = order[start[neighbour[triplet_ji]] + rank]
    straight_back = (neighbour[triplet_kj] == centre[triplet_ji]) & (
        edge_shift[triplet_kj] == -edge_shift[triplet_ji]
    ).all(dim=-1)
    keep = ~straight_back
    return triplet_kj[keep], triplet_ji[keep]
