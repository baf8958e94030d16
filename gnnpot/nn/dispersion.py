"""DFT-D3(BJ) dispersion (Grimme et al. 2010, 2011), a fixed term added to a potential's energy.

A model trained on DFT data without dispersion gets it back at inference, and a model trained
on data with dispersion can leave it out of what it learns: :class:`D3Dispersion` is added to the
per-atom energies (:class:`~gnnpot.models.Potential`) at training and inference alike. It has no
weights; its parameters come from the functional's name (``s6``, ``s8``, ``a1``, ``a2`` of
Becke-Johnson damping, from tad-dftd3's table of s-dftd3's parameters).

The energy is the two-body D3 sum with rational damping, over every pair within ``cutoff``
(periodic images included)::

    E = -1/2 sum_{i != j} [ s6 C6_ij / (r^6 + R^6) + s8 C8_ij / (r^8 + R^8) ],
    R = a1 sqrt(C8_ij / C6_ij) + a2,  C8_ij = 3 C6_ij sqrt(Q_i Q_j)

with ``C6_ij`` interpolated between reference systems by each atom's D3 coordination number. The
three-body Axilrod-Teller-Muto term (``s9``) is not included: it needs triples of periodic images,
and it is small for most systems; compare with ``atm=False`` in s-dftd3.

Why this code and not a library's whole model: tad-dftd3 (0.7) takes molecules only (no cell,
so no stress), and torch-dftd installs pymatgen and pandas with it. So the pair sums run here, over
gnnpot's own neighbour list (periodic images, triclinic cells, batches of frames), and the D3
reference data and damping come from tad-dftd3 (``tad-dftd3`` on PyPI, imported when the term is
built). Cutoffs and the counting function are s-dftd3's defaults, so energies, forces and stress
agree with its ASE calculator (``dftd3.ase.DFTD3(..., atm=False)``; tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import units
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.neighbors import neighbor_list_arrays
from gnnpot.nn.geometry import edge_vectors
from gnnpot.nn.scatter import gather, scatter_sum

# s-dftd3's real-space cutoffs (Bohr) and the steepness of its coordination-number counting function
_DISP2_CUTOFF_BOHR, _CN_CUTOFF_BOHR, _KCN = 60.0, 40.0, 16.0
_REFERENCE: dict = {}  # tad-dftd3's reference tables, loaded once (~20 MB)


def _reference(dtype: torch.dtype, device: torch.device) -> tuple[Any, Tensor, Tensor]:
    """tad-dftd3's ``Reference`` (C6 [Z, Z, 7, 7], CN [Z, 7]), covalent radii [Z] and sqrt(Q) [Z], atomic units."""
    key = (dtype, device)
    if key not in _REFERENCE:
        from tad_dftd3 import data, reference
        from tad_mctc.data import radii

        dd = {"dtype": dtype, "device": device}
        _REFERENCE[key] = (reference.Reference(**dd), radii.COV_D3(**dd), data.R4R2(**dd))
    return _REFERENCE[key]


class D3Dispersion(nn.Module):
    """Per-atom D3(BJ) dispersion energies [N] (eV) of a functional (module docstring).

    Args:
        functional: the functional's name as s-dftd3 knows it (``pbe``, ``b3lyp``, ``r2scan``, ...).
        cutoff: radius of the pair sum, Å (s-dftd3's 60 Bohr).
        cn_cutoff: radius of the coordination numbers, Å (s-dftd3's 40 Bohr).

    Raises:
        ValueError: a functional without D3(BJ) parameters.
    """

    def __init__(
        self,
        functional: str,
        cutoff: float = _DISP2_CUTOFF_BOHR * units.Bohr,
        cn_cutoff: float = _CN_CUTOFF_BOHR * units.Bohr,
    ) -> None:
        super().__init__()
        from tad_dftd3.param.functional import get_functional_params

        try:
            params = get_functional_params(functional, damping="bj", dtype=torch.float64)
        except (KeyError, ValueError) as err:
            raise ValueError(f"no D3(BJ) parameters for functional {functional!r} ({err})") from err
        self.functional = str(functional)
        self.params = {name: float(params[name]) for name in ("s6", "s8", "a1", "a2")}
        if not 0 < cn_cutoff <= cutoff:
            raise ValueError(f"need 0 < cn_cutoff <= cutoff, got cn_cutoff={cn_cutoff!r}, cutoff={cutoff!r}")
        self.cutoff = float(cutoff)
        self.cn_cutoff = float(cn_cutoff)

    def reset_parameters(self) -> None:
        """Nothing to reset: no weights."""

    def prepare(self, data: Data) -> dict[str, Tensor]:
        """Every pair within ``cutoff`` once, periodic images included: ``d3_pairs`` [2, P], ``d3_shift`` [P, 3].

        Args:
            data: the input graph (``pos``, ``cell``, ``pbc``, ``batch``).
        """
        pos, cell, pbc = data[keys.POSITIONS].detach(), data[keys.CELL].detach(), data[keys.PBC]
        batch = data.get(keys.BATCH)
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        counts = torch.bincount(batch, minlength=cell.shape[0]).tolist()
        positions, cells, periodicity = pos.cpu().double().numpy(), cell.cpu().double().numpy(), pbc.cpu().numpy()
        pairs, shifts, start = [np.zeros((2, 0), dtype=np.int64)], [np.zeros((0, 3), dtype=np.int64)], 0
        for frame, count in enumerate(counts):
            i, j, shift = neighbor_list_arrays(
                positions[start : start + count], cells[frame], periodicity[frame], self.cutoff
            )
            pairs.append(np.stack([i[::2], j[::2]]) + start)  # each pair once (the pair convention of keys)
            shifts.append(shift[::2])
            start += count
        return {
            keys.D3_PAIRS: torch.as_tensor(np.concatenate(pairs, axis=1), device=pos.device),
            keys.D3_SHIFT: torch.as_tensor(np.concatenate(shifts), device=pos.device),
        }

    def forward(self, graph: Data, features: Tensor) -> Tensor:
        """Per-atom dispersion energies [N], eV, half of each pair's energy on each of its atoms.

        Args:
            graph: the model's graph with ``pos`` and ``cell`` (Å, differentiable), ``z``, ``batch``
                and the tensors of :meth:`prepare`.
            features: the family's features [N, num_features] (unused: the term is fixed).
        """
        pos, z = graph[keys.POSITIONS], graph[keys.ATOMIC_NUMBERS]
        pairs, num_atoms = graph[keys.D3_PAIRS], z.shape[0]
        if pairs.shape[1] == 0:
            return pos.new_zeros(num_atoms)
        from tad_dftd3.model import weight_references

        reference, rcov, r4r2 = _reference(pos.dtype, pos.device)
        vec = edge_vectors(pos, graph[keys.CELL], pairs, graph[keys.D3_SHIFT], graph[keys.BATCH])
        distance = torch.linalg.vector_norm(vec, dim=-1) / units.Bohr  # Bohr
        i, j = pairs[0], pairs[1]
        zi, zj = gather(z, i), gather(z, j)
        # coordination numbers: s-dftd3's exponential counting, over the pairs within cn_cutoff
        count = 1.0 / (1.0 + torch.exp(-_KCN * ((rcov[zi] + rcov[zj]) / distance - 1.0)))
        count = count * (distance * units.Bohr <= self.cn_cutoff).to(count.dtype)
        cn = scatter_sum(count, i, num_atoms) + scatter_sum(count, j, num_atoms)
        # C6 of each pair from the references, Gaussian-weighted by CN (tad-dftd3 weighs in float64)
        weights = weight_references(z, cn, reference).to(pos.dtype)  # [N, 7]
        c6 = torch.einsum("pab,pa,pb->p", reference.c6[zi, zj], gather(weights, i), gather(weights, j))
        qq = 3.0 * r4r2[zi] * r4r2[zj]
        radius = self.params["a1"] * torch.sqrt(qq) + self.params["a2"]
        pair = -(
            self.params["s6"] * c6 / (distance**6 + radius**6) + self.params["s8"] * c6 * qq / (distance**8 + radius**8)
        )
        energy = 0.5 * (scatter_sum(pair, i, num_atoms) + scatter_sum(pair, j, num_atoms))
        return energy * units.Hartree

    def __repr__(self) -> str:
        return f"{type(self).__name__}(functional={self.functional!r}, cutoff={self.cutoff:.2f}, {self.params})"
