"""Edge geometry from positions and cell, kept differentiable for forces and stress."""

from __future__ import annotations

import torch
from torch import Tensor

from gnnpot.nn.scatter import gather


def edge_vectors(pos: Tensor, cell: Tensor, edge_index: Tensor, edge_shift: Tensor, batch: Tensor) -> Tensor:
    """``pos[j] - pos[i] + shift @ cell`` for every edge (see :mod:`gnnpot.keys`).

    Args:
        pos: [N, 3] Å.
        cell: [B, 3, 3] Å, rows are lattice vectors.
        edge_index: [2, E], row 0 centre i, row 1 neighbour j.
        edge_shift: [E, 3] integer lattice translations.
        batch: [N] frame of each atom.

    Returns:
        [E, 3] edge vectors, Å.
    """
    i, j = edge_index[0], edge_index[1]
    vec = gather(pos, j) - gather(pos, i)
    if edge_shift.numel():
        offset = torch.einsum("ek,ekl->el", edge_shift.to(pos.dtype), gather(cell, gather(batch, i)))
        vec = vec + offset
    return vec
