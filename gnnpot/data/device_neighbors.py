"""The calculator's neighbour list on the model's device: vesin-torch with its Verlet skin.

:class:`~gnnpot.data.SkinNeighborList` builds on the host (numpy and vesin) and its graph is then
copied to the device at every call. :class:`DeviceNeighborList` keeps positions, pairs, shifts and
distances on the device (vesin-torch runs on CPU and CUDA tensors and caches its list until an atom
has moved more than ``skin / 2``), so an MD step copies the positions in and the results out, and
nothing else. The pairs are returned in gnnpot's pair convention (edge ``2k + 1`` is edge ``2k``
reversed), as the host list returns them, though in vesin's order: sums over edges then differ from
the host path's by round-off only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gnnpot.data.neighbors import _complete_cell, check_cutoff


class DeviceNeighborList:
    """Pairs within ``cutoff`` of positions on a torch device, rebuilt only when atoms moved past ``skin / 2``.

    Args:
        cutoff: radius of the returned pairs, Å.
        skin: vesin's Verlet skin, Å (>= 0; 0 rebuilds at every call).
    """

    def __init__(self, cutoff: float, skin: float = 0.5) -> None:
        from vesin.torch import NeighborList

        self.cutoff = check_cutoff(cutoff)
        if not skin >= 0:
            raise ValueError(f"skin must be >= 0, got {skin!r}")
        self.skin = float(skin)
        self._vesin = NeighborList(cutoff=self.cutoff, full_list=False, skin=self.skin)
        self._box: tuple[np.ndarray, np.ndarray, Tensor, Tensor] | None = None
        self.distances: Tensor | None = None  # [2P] of the last call, on the device

    def box(self, cell: np.ndarray, pbc: np.ndarray, like: Tensor) -> tuple[Tensor, Tensor]:
        """The box for vesin (missing non-periodic vectors completed) and periodicity on ``like``'s device.

        Both are copied to the device once and kept while the host cell and pbc stay the same.
        """
        if self._box is None or not (np.array_equal(self._box[0], cell) and np.array_equal(self._box[1], pbc)):
            box = torch.as_tensor(_complete_cell(cell, pbc), dtype=like.dtype).to(like.device)
            self._box = (cell.copy(), pbc.copy(), box, torch.as_tensor(pbc).to(like.device))
        return self._box[2], self._box[3]

    def update(self, positions: Tensor, cell: np.ndarray, pbc: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """``edge_index`` [2, 2P], integer ``edge_shift`` [2P, 3] and distances [2P] (Å), on the device.

        Args:
            positions: [N, 3] Å, float64, on the device.
            cell: [3, 3] Å on the host (rows are the lattice vectors).
            pbc: [3] periodicity on the host.
        """
        box, periodic = self.box(np.asarray(cell, dtype=np.float64), np.asarray(pbc, dtype=bool), positions)
        i, j, shifts, distances = self._vesin.compute(positions, box, periodic, quantities="ijSd", copy=True)
        i, j, shifts = i.long(), j.long(), shifts.long()
        edge_index = torch.stack([torch.stack([i, j], dim=1).reshape(-1), torch.stack([j, i], dim=1).reshape(-1)])
        edge_shift = torch.stack([shifts, -shifts], dim=1).reshape(-1, 3)
        self.distances = distances.repeat_interleave(2)
        return edge_index, edge_shift, self.distances

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cutoff={self.cutoff}, skin={self.skin})"
