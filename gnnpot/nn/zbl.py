"""Ziegler-Biersack-Littmark (ZBL) screened nuclear repulsion, an optional short-range prior.

Written here because no maintained library offers it as a differentiable torch module over a
PyG edge list. Constants are the universal ZBL screening function (Ziegler, Biersack and
Littmark, 1985).
"""

from __future__ import annotations

import torch
from ase import units
from torch import Tensor, nn

from gnnpot.nn.radial import PolynomialCutoff
from gnnpot.nn.scatter import scatter_sum

_COULOMB = units.Hartree * units.Bohr  # e^2 / (4 pi eps0) in eV Å
_SCREENING_LENGTH = 0.8854 * units.Bohr  # Å
_COEFFS = (0.18175, 0.50986, 0.28022, 0.02817)
_EXPONENTS = (3.1998, 0.94229, 0.40290, 0.20162)


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energies ``0.5 sum_j V(r_ij) u(r_ij)`` with a smooth envelope ``u``.

    Args:
        cutoff: radius where the repulsion is switched off, Å.
    """

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        self.envelope = PolynomialCutoff(cutoff, p)
        self.register_buffer("coeffs", torch.tensor(_COEFFS), persistent=False)
        self.register_buffer("exponents", torch.tensor(_EXPONENTS), persistent=False)

    def forward(self, z: Tensor, edge_index: Tensor, edge_len: Tensor) -> Tensor:
        """Per-atom ZBL energies, half of each pair's energy on each of its atoms.

        Args:
            z: [N] atomic numbers.
            edge_index: [2, E], row 0 centre i, row 1 neighbour j.
            edge_len: [E] edge lengths, Å.

        Returns:
            [N] energies, eV.
        """
        zi = z[edge_index[0]].to(edge_len.dtype)
        zj = z[edge_index[1]].to(edge_len.dtype)
        a = _SCREENING_LENGTH / (zi.pow(0.23) + zj.pow(0.23))
        x = (edge_len / a).unsqueeze(-1)
        phi = (self.coeffs.to(x.dtype) * torch.exp(-self.exponents.to(x.dtype) * x)).sum(-1)
        pair = _COULOMB * zi * zj / edge_len * phi * self.envelope(edge_len)
        return 0.5 * scatter_sum(pair, edge_index[0], z.numel())

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(cutoff={self.envelope.cutoff})"
