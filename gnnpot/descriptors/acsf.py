"""Atom-centred symmetry functions (Behler, J. Chem. Phys. 134, 074106 (2011)).

With the cosine cutoff ``f_c(r) = 0.5 (cos(pi r / r_c) + 1)`` for ``r < r_c`` (0 beyond)::

    G2_b(i)  = sum_{j in b} exp(-eta (r_ij - r_s)^2) f_c(r_ij)
    G4_bc(i) = sum_{unordered {j, k}: j in b, k in c} 2^(1 - zeta) (1 + lambda cos theta_jik)^zeta
               exp(-eta (r_ij^2 + r_ik^2 + r_jk^2)) f_c(r_ij) f_c(r_ik) f_c(r_jk)
    G5_bc(i) = the same without the r_jk term and its cutoff

G2 is resolved by the neighbour's element ``b``, G4 and G5 by the unordered pair of neighbour
elements ``{b, c}``. The centre's own element is not encoded (as in Behler's and DScribe's ACSF):
models keep one network per element, or concatenate an element embedding. Each unordered pair of
neighbours counts once; Behler's 2011 sum over all ``j != k`` counts it twice. G2 with
``eta = 0, r_s = 0`` is Behler's G1 (the smooth coordination number). Note ``f_c`` is only C1 at
``r_c`` (its second derivative jumps), as in the literature.

Default parameters (Gastegger et al., J. Chem. Phys. 148, 241709 (2018), the "shifted" radial and
"centred" angular grids; the scheme of n2p2's symmetry-function generator):
    * G2: G1 plus 8 Gaussians with ``r_s`` evenly spaced on ``[1 Å, r_c - 0.5 Å]`` and
      ``eta = 1 / (2 dr^2)`` for the spacing ``dr`` (:func:`shifted_radial_params`).
    * G4 and G5: ``eta = 1 / (2 r^2)`` for 3 radii ``r`` evenly spaced on ``[1 Å, r_c - 0.5 Å]``,
      ``zeta`` in (1, 4) and ``lambda`` in (-1, +1): 12 functions each
      (:func:`centred_angular_params`). zeta = 1, 2, 4, 16 are Behler's usual choices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gnnpot.descriptors.base import AtomCentredDescriptor, NeighbourPairs, neighbour_pairs, pair_index
from gnnpot.nn.radial import CosineCutoff
from gnnpot.nn.scatter import gather, scatter_sum


def shifted_radial_params(
    cutoff: float, num: int = 8, r_min: float = 1.0, margin: float = 0.5, with_g1: bool = True
) -> list[tuple[float, float]]:
    """G2 parameters on the "shifted" grid of Gastegger et al. (2018).

    Args:
        cutoff: ``r_c``, Å.
        num: number of shifted Gaussians (>= 2).
        r_min: first shift, Å.
        margin: last shift is ``r_c - margin``, Å.
        with_g1: start with ``(0, 0)``, Behler's G1.

    Returns:
        ``[(eta, r_s), ...]`` with eta in 1/Å² and r_s in Å.
    """
    r_max = cutoff - margin
    if num < 2 or not 0.0 <= r_min < r_max:
        raise ValueError(f"need num >= 2 and 0 <= r_min < cutoff - margin, got {num=}, {r_min=}, {cutoff=}, {margin=}")
    spacing = (r_max - r_min) / (num - 1)
    shifts = [(1.0 / (2.0 * spacing**2), r_min + n * spacing) for n in range(num)]
    return [(0.0, 0.0), *shifts] if with_g1 else shifts


def centred_angular_params(
    cutoff: float,
    num: int = 3,
    r_min: float = 1.0,
    margin: float = 0.5,
    zetas: Sequence[float] = (1.0, 4.0),
    lambdas: Sequence[float] = (-1.0, 1.0),
) -> list[tuple[float, float, float]]:
    """G4/G5 parameters on the "centred" grid of Gastegger et al. (2018).

    Args:
        cutoff: ``r_c``, Å.
        num: number of widths (>= 2); ``eta = 1 / (2 r^2)`` for ``r`` evenly spaced on
            ``[r_min, r_c - margin]``.
        r_min: smallest radius, Å (> 0).
        margin: largest radius is ``r_c - margin``, Å.
        zetas: angular resolutions.
        lambdas: +1 and/or -1.

    Returns:
        ``[(eta, zeta, lambda), ...]`` with eta in 1/Å², ordered eta-major, then zeta, then lambda.
    """
    r_max = cutoff - margin
    if num < 2 or not 0.0 < r_min < r_max:
        raise ValueError(f"need num >= 2 and 0 < r_min < cutoff - margin, got {num=}, {r_min=}, {cutoff=}, {margin=}")
    radii = [r_min + n * (r_max - r_min) / (num - 1) for n in range(num)]
    return [(1.0 / (2.0 * r**2), float(z), float(lam)) for r in radii for z in zetas for lam in lambdas]


def _as_table(params: Sequence[Sequence[float]], width: int, name: str) -> Tensor:
    """Parameters as a float64 [n, width] table, checked (eta >= 0; angular: zeta >= 1, |lambda| = 1)."""
    table = torch.tensor([list(map(float, p)) for p in params], dtype=torch.float64).reshape(-1, width)
    if not torch.isfinite(table).all() or (table[:, 0] < 0).any():
        raise ValueError(f"{name} must be finite with eta >= 0, got {list(params)!r}")
    if width == 3 and ((table[:, 1] < 1).any() or (table[:, 2].abs() != 1).any()):
        raise ValueError(f"{name} need zeta >= 1 and lambda = +1 or -1, got {list(params)!r}")
    return table


class SymmetryFunctions(AtomCentredDescriptor):
    """Behler's G2, G4 and G5 symmetry functions with a cosine cutoff.

    Args:
        elements: atomic numbers (kept in increasing order).
        cutoff: ``r_c``, Å (one cutoff for all functions).
        g2_params: ``[(eta [1/Å²], r_s [Å]), ...]``; default :func:`shifted_radial_params`.
        g4_params: ``[(eta [1/Å²], zeta, lambda), ...]``; default :func:`centred_angular_params`;
            ``[]`` for none.
        g5_params: as ``g4_params``.

    Output:
        [N, S * n2 + P * (n4 + n5)] for S elements and P = S (S + 1) / 2 element pairs: first
        ``[neighbour element, G2]``, then ``[neighbour pair, (G4..., G5...)]`` with pairs in the
        lower-triangular order of :func:`~gnnpot.descriptors.base.pair_index`. This is DScribe's
        ACSF layout when its G1 is written as G2 ``(0, 0)`` and G3 is not used.
    """

    def __init__(
        self,
        elements: Sequence[int],
        cutoff: float,
        g2_params: Sequence[Sequence[float]] | None = None,
        g4_params: Sequence[Sequence[float]] | None = None,
        g5_params: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__(elements, cutoff)
        g2 = shifted_radial_params(self.cutoff) if g2_params is None else g2_params
        g4 = centred_angular_params(self.cutoff) if g4_params is None else g4_params
        g5 = centred_angular_params(self.cutoff) if g5_params is None else g5_params
        self.register_buffer("g2_params", _as_table(g2, 2, "g2_params"), persistent=False)
        self.register_buffer("g4_params", _as_table(g4, 3, "g4_params"), persistent=False)
        self.register_buffer("g5_params", _as_table(g5, 3, "g5_params"), persistent=False)
        self.fc = CosineCutoff(self.cutoff)
        self.num_g2, self.num_g4, self.num_g5 = len(g2), len(g4), len(g5)
        self.num_features = self.num_elements * self.num_g2 + self.num_pairs * (self.num_g4 + self.num_g5)

    def forward(self, z: Tensor, edge_index: Tensor, edge_shift: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom symmetry functions.

        Args:
            z: [N] atomic numbers.
            edge_index: [2, E] int64, row 0 centre ``i``, row 1 neighbour ``j``; a full list.
            edge_shift: [E, 3] int64 integer cell shifts of the neighbour's image.
            edge_vec: [E, 3] ``pos[j] - pos[i] + shift @ cell``, Å.

        Returns:
            [N, num_features] symmetry-function values (dimensionless).
        """
        num_atoms = z.shape[0]
        species = self.species(z)
        edge_index, edge_shift, edge_vec = self.within_cutoff(edge_index, edge_shift, edge_vec)
        radial = self._radial(species, edge_index, edge_vec, num_atoms)
        if self.num_g4 + self.num_g5 == 0:
            return radial
        return torch.cat([radial, self._angular(species, edge_index, edge_shift, edge_vec, num_atoms)], dim=-1)

    def _radial(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, num_atoms: int) -> Tensor:
        """[N, S * n2] G2 by neighbour element."""
        edge_len = torch.linalg.vector_norm(edge_vec, dim=-1)
        g2 = self.radial_terms(edge_len)
        slot = edge_index[0] * self.num_elements + gather(species, edge_index[1])
        return scatter_sum(g2, slot, num_atoms * self.num_elements).view(num_atoms, -1)

    def radial_terms(self, edge_len: Tensor) -> Tensor:
        """G2 of each edge [E, n2]: ``exp(-eta (r - r_s)^2) fc(r)``, before the sum over neighbours."""
        eta, shift = self.g2_params.to(edge_len.dtype).unbind(-1)
        return torch.exp(-eta * (edge_len.unsqueeze(-1) - shift).pow(2)) * self.fc(edge_len).unsqueeze(-1)

    def angular_terms(self, pairs: NeighbourPairs) -> Tensor:
        """G4 then G5 of each ordered pair of neighbours [T, n4 + n5], before the sum over pairs.

        ``2^(1 - zeta) (1 + lambda cos)^zeta exp(-eta (r_ij^2 + r_ik^2 [+ r_jk^2])) fc fc [fc]``; the
        caller weighs the pairs (both orders of every pair are present).
        """
        dtype = pairs.len_first.dtype
        fc_both = self.fc(pairs.len_first) * self.fc(pairs.len_second)
        sq_sum = pairs.len_first.pow(2) + pairs.len_second.pow(2)
        cos = pairs.cos_angle.unsqueeze(-1)
        terms = []
        for params, with_jk in ((self.g4_params, True), (self.g5_params, False)):
            eta, zeta, lam = params.to(dtype).unbind(-1)
            exponent = sq_sum + pairs.len_between.pow(2) if with_jk else sq_sum
            envelope = fc_both * self.fc(pairs.len_between) if with_jk else fc_both
            angle = 2.0 * (0.5 * (1.0 + lam * cos)).pow(zeta)  # 2^(1 - zeta) (1 + lambda cos)^zeta
            terms.append(angle * torch.exp(-eta * exponent.unsqueeze(-1)) * envelope.unsqueeze(-1))
        return torch.cat(terms, dim=-1)

    def _angular(
        self, species: Tensor, edge_index: Tensor, edge_shift: Tensor, edge_vec: Tensor, num_atoms: int
    ) -> Tensor:
        """[N, P * (n4 + n5)] G4 and G5 by unordered pair of neighbour elements."""
        pairs = neighbour_pairs(edge_index, edge_shift, edge_vec, num_atoms)
        # Both orders of every pair are present: the factor 1/2 counts each unordered pair once.
        values = 0.5 * self.angular_terms(pairs)
        slot = pairs.centre * self.num_pairs + pair_index(gather(species, pairs.first), gather(species, pairs.second))
        return scatter_sum(values, slot, num_atoms * self.num_pairs).view(num_atoms, -1)

    def extra_repr(self) -> str:
        """The settings shown by ``repr``."""
        return f"{super().extra_repr()}, num_g2={self.num_g2}, num_g4={self.num_g4}, num_g5={self.num_g5}"
