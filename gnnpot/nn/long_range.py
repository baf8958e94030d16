"""Long-range electrostatics: atomic charges and their Coulomb energy, Ewald or direct sum.

A :class:`Electrostatics` head adds ``E_i^elec`` to each atom's energy (:class:`~gnnpot.models.Potential`).
It composes a charge model with the sum:

* :class:`LatentCharges`: one charge per atom from the family's invariant features, learned
  from energies and forces alone (the latent charges of LES, Cheng 2025, "Latent Ewald summation
  for machine learning of long-range interactions"), shifted so that each frame's charges add up to
  its total charge (:data:`gnnpot.keys.TOTAL_CHARGE`, 0 unless the data says otherwise).
* :class:`FixedCharges`: the charges the data carries (:data:`gnnpot.keys.CHARGES`, ASE's
  ``initial_charges``), e.g. for a fixed-charge reference or a Madelung energy.

The energy, in eV and Å with ``k_e = e^2 / (4 pi eps0) = 14.399645 eV Å``, is the interaction of
distinct charges, each a Gaussian of width ``smearing`` (0: point charges), so that a pair at
distance ``r`` interacts by ``k_e q_i q_j erf(r / a) / r`` with ``a = 2 * smearing`` (``1 / r`` for
point charges). A charge's interaction with its own Gaussian is left out (a per-atom ``q_i^2``
constant that the local model can absorb); with its own periodic images it is not.

* Non-periodic frames: the direct sum over all pairs of the frame, no cutoff.
* Periodic frames (all three directions): Ewald summation with splitting width ``b``::

      E = k_e [ sum_{pairs, r < cutoff} q_i q_j (erf(r / a) - erf(r / b)) / r               (real space)
              + (2 pi / V) sum_{k != 0, |k| < k_c} exp(-k^2 b^2 / 4) / k^2 |S(k)|^2        (reciprocal)
              - sum_i q_i^2 / (sqrt(pi) b)                                                 (self)
              - pi (b^2 - a^2) Q^2 / (2 V) ]                                               (background)

  with ``S(k) = sum_i q_i exp(i k . r_i)`` and ``Q`` the frame's net charge (the last term is the
  neutralising background of a charged cell). ``b = cutoff / sqrt(-ln accuracy)`` makes the
  real-space terms beyond the cutoff and the k-vectors beyond ``k_c = 2 sqrt(-ln accuracy) / b``
  smaller than ``accuracy`` (relative); ``b`` is never below ``a``, and at ``b = a`` (wide
  charges) the real-space part vanishes and only the reciprocal sum is left, as in LES.

Partly periodic frames (slabs) are refused: their Ewald sum needs a correction not written here.

Indices come from :meth:`Electrostatics.prepare`, eagerly and without gradients, as for the
families: the real-space pairs (gnnpot's vesin neighbour list at the head's own cutoff; all pairs of
a molecule) and the integer k-vectors ``n`` of each periodic cell. The geometry is computed in
:meth:`Electrostatics.forward` from ``pos`` and ``cell``, so the one autograd wrapper
(:func:`~gnnpot.models.forces.energy_gradients`) gets forces and stress; the set of k-vectors is
fixed per call, so the energy is smooth in the strain.

Written here rather than with torch-pme (whose ``EwaldCalculator`` and ``CoulombPotential`` give
the same point-charge numbers, checked in ``tests/models/test_long_range.py``): torch-pme computes
one structure per call and picks its k-vectors from the cell inside the differentiated call, while
a training batch mixes molecules (direct sum, no neighbour list) and cells of different shapes,
Gaussian charges interact by ``erf(r / 2 sigma) / r``, not by torch-pme's split of ``1 / r``, and
the per-atom energies (``atomic_energy``) need the per-atom split written out. The code is the
textbook Ewald sum (Frenkel and Smit, chapter 12) in ~100 lines, with no new dependency. For
cells of thousands of atoms, PME (torch-pme's ``PMECalculator``) would scale better than this
``O(N K)`` sum.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import units
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.checks import check_cutoff
from gnnpot.data.neighbors import neighbor_list_arrays
from gnnpot.nn.geometry import edge_vectors
from gnnpot.nn.scatter import gather, scatter_sum

COULOMB_CONSTANT = units.Hartree * units.Bohr  # e^2 / (4 pi eps0) = 14.399645 eV Å / e^2


class LatentCharges(nn.Module):
    """Per-atom charges [N] (e) from invariant features, their sum fixed to each frame's total charge.

    A two-layer MLP gives raw charges ``p_i``; each frame's mean excess is removed,
    ``q_i = p_i - (sum_j p_j - Q) / n``, so that ``sum_i q_i = Q`` exactly (an isolated neutral atom
    gets ``q = 0``).

    Args:
        num_features: width of the family's invariant features.
        num_hidden: hidden width; default ``num_features // 2``.
    """

    def __init__(self, num_features: int, num_hidden: int | None = None) -> None:
        super().__init__()
        self.num_features = int(num_features)
        num_hidden = num_hidden or max(self.num_features // 2, 1)
        self.net = nn.Sequential(nn.Linear(self.num_features, num_hidden), nn.SiLU(), nn.Linear(num_hidden, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases."""
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, graph: Data, features: Tensor) -> Tensor:
        """Charges [N] in e.

        Args:
            graph: the model's graph; reads ``batch`` [N] and ``total_charge`` [B] (e).
            features: [N, num_features] invariant features of the family.
        """
        raw = self.net(features).squeeze(-1)
        batch, total = graph[keys.BATCH], graph[keys.TOTAL_CHARGE].to(raw.dtype)
        counts = scatter_sum(torch.ones_like(raw), batch, total.shape[0]).clamp(min=1)
        excess = (scatter_sum(raw, batch, total.shape[0]) - total) / counts
        return raw - gather(excess, batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_features={self.num_features})"


class FixedCharges(nn.Module):
    """The per-atom charges the data carries (:data:`gnnpot.keys.CHARGES`, ASE's ``initial_charges``)."""

    def forward(self, graph: Data, features: Tensor) -> Tensor:
        """Charges [N] in e, in the dtype of ``features`` [N, num_features] (otherwise unused).

        Raises:
            ValueError: the data has no per-atom charges.
        """
        if keys.CHARGES not in graph:
            raise ValueError(
                "fixed charges need per-atom charges in the data (atoms.set_initial_charges(...), or an "
                "'initial_charges' column in extxyz), got frames without them"
            )
        return graph[keys.CHARGES].to(features.dtype)

    def reset_parameters(self) -> None:
        """Nothing to reset: no weights."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Electrostatics(nn.Module):
    """Per-atom Coulomb energies [N] (eV) of a charge model's charges: Ewald or direct sum (module docstring).

    Args:
        charges: ``charges(graph, features) -> [N]`` charges in e (:class:`LatentCharges`,
            :class:`FixedCharges`).
        smearing: width of each atom's Gaussian charge, Å; 0 for point charges.
        cutoff: real-space cutoff of the Ewald sum, Å (its own neighbour list, not the model's).
        accuracy: relative size of the largest term left out of the Ewald sums, in (0, 1).
    """

    def __init__(self, charges: nn.Module, smearing: float = 0.0, cutoff: float = 8.0, accuracy: float = 1e-6) -> None:
        super().__init__()
        if not (math.isfinite(smearing) and smearing >= 0):
            raise ValueError(f"smearing must be a finite number >= 0 (Å), got {smearing!r}")
        if not 0 < accuracy < 1:
            raise ValueError(f"accuracy must be in (0, 1), got {accuracy!r}")
        self.charges = charges
        self.smearing = float(smearing)
        self.cutoff = check_cutoff(cutoff)
        self.accuracy = float(accuracy)
        width = math.sqrt(-math.log(self.accuracy))  # erfc(x) < exp(-x^2) for x > 0.56
        self.split = max(self.cutoff / width, 2.0 * self.smearing)  # b, Å
        self.k_cutoff = 2.0 * width / self.split  # exp(-k^2 b^2 / 4) = accuracy there, 1/Å
        # with b = a the real-space terms are identically zero: periodic frames need no pairs
        self.real_space = self.split > 2.0 * self.smearing

    def reset_parameters(self) -> None:
        """Reset the charge model's weights."""
        self.charges.reset_parameters()

    # --- indices, eagerly -----------------------------------------------------------------------

    def prepare(self, data: Data) -> dict[str, Tensor]:
        """Real-space pairs, k-vectors and the charge fields of the data, for :meth:`forward`.

        Args:
            data: the input graph: ``pos`` [N, 3], ``cell`` [B, 3, 3], ``pbc`` [B, 3], ``batch``
                [N], and ``total_charge`` [B] and ``charges`` [N] when the data has them.

        Returns:
            ``coulomb_pairs`` [2, P], ``coulomb_shift`` [P, 3], ``coulomb_periodic`` [P],
            ``kvectors`` [K, 3], ``kvector_frame`` [K], ``pbc`` [B, 3], ``total_charge`` [B] (zeros
            when the data has none) and ``charges`` [N] when the data has them.

        Raises:
            ValueError: a frame periodic along some directions only.
        """
        pos, cell, pbc = data[keys.POSITIONS].detach(), data[keys.CELL].detach(), data[keys.PBC]
        device, num_frames = pos.device, cell.shape[0]
        batch = data.get(keys.BATCH)
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=device)
        counts = torch.bincount(batch, minlength=num_frames).tolist()
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        pairs, shifts, periodic, kvectors, kframes = [], [], [], [], []
        positions, cells, periodicity = pos.cpu().double().numpy(), cell.cpu().double().numpy(), pbc.cpu().numpy()
        for frame, (start, count) in enumerate(zip(starts, counts)):
            if periodicity[frame].all():
                kvec = self._kvectors(cells[frame])
                kvectors.append(kvec)
                kframes.append(np.full(len(kvec), frame, dtype=np.int64))
                if not self.real_space:
                    continue
                i, j, shift = neighbor_list_arrays(
                    positions[start : start + count], cells[frame], periodicity[frame], self.cutoff
                )
                i, j, shift = i[::2], j[::2], shift[::2]  # each pair once (the pair convention of keys)
            elif not periodicity[frame].any():
                i, j = np.triu_indices(count, 1)
                shift = np.zeros((len(i), 3), dtype=np.int64)
            else:
                raise ValueError(
                    f"the long-range head needs frames periodic along all three directions or none, "
                    f"got pbc={periodicity[frame].tolist()} in frame {frame}"
                )
            pairs.append(np.stack([i, j]).astype(np.int64) + start)
            shifts.append(shift.astype(np.int64))
            periodic.append(np.full(len(i), bool(periodicity[frame].all())))
        prepared = {
            keys.COULOMB_PAIRS: _cat(pairs, (2, 0), np.int64, device, axis=1),
            keys.COULOMB_SHIFT: _cat(shifts, (0, 3), np.int64, device),
            keys.COULOMB_PERIODIC: _cat(periodic, (0,), bool, device),
            keys.KVECTORS: _cat(kvectors, (0, 3), np.int64, device),
            keys.KVECTOR_FRAME: _cat(kframes, (0,), np.int64, device),
            keys.PBC: pbc,
            keys.TOTAL_CHARGE: data.get(keys.TOTAL_CHARGE, pos.new_zeros(num_frames)),
        }
        if data.get(keys.CHARGES) is not None:
            prepared[keys.CHARGES] = data[keys.CHARGES]
        return prepared

    def _kvectors(self, cell: np.ndarray) -> np.ndarray:
        """Integer reciprocal-lattice vectors ``n`` [K, 3] with ``0 < |k| <= k_c``, one of each ``+-n``.

        ``n_d = k . a_d / (2 pi)``, so ``|n_d| <= k_c |a_d| / (2 pi)`` bounds the search box.
        """
        bound = np.ceil(self.k_cutoff * np.linalg.norm(cell, axis=1) / (2 * np.pi)).astype(np.int64)
        axes = [np.arange(-m, m + 1) for m in bound]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        first = np.where(grid[:, 0] != 0, grid[:, 0], np.where(grid[:, 1] != 0, grid[:, 1], grid[:, 2]))
        grid = grid[first > 0]  # one of each +-n, and not 0
        k = 2 * np.pi * grid @ np.linalg.inv(cell).T
        return grid[np.einsum("kd,kd->k", k, k) <= self.k_cutoff**2]

    # --- energies, differentiable ---------------------------------------------------------------

    def forward(self, graph: Data, features: Tensor) -> Tensor:
        """Per-atom electrostatic energies [N], eV; they add up to each frame's energy.

        Args:
            graph: the model's graph with ``pos`` [N, 3] and ``cell`` [B, 3, 3] (Å, differentiable,
                set by :func:`~gnnpot.models.forces.energy_gradients`), ``batch`` and the tensors of
                :meth:`prepare`.
            features: [N, num_features] the family's invariant features (for the charge model).
        """
        charges = self.charges(graph, features)
        pos, cell, batch = graph[keys.POSITIONS], graph[keys.CELL], graph[keys.BATCH]
        energy = self._pair_energy(charges, pos, cell, batch, graph)
        periodic = graph[keys.PBC].all(dim=1)
        if bool(periodic.any()):
            energy = energy + self._periodic_energy(charges, pos, cell, batch, periodic, graph)
        return COULOMB_CONSTANT * energy

    def _pair_energy(self, charges: Tensor, pos: Tensor, cell: Tensor, batch: Tensor, graph: Data) -> Tensor:
        """Direct (molecules) and real-space (cells) pair terms, half of each pair on each atom, e^2/Å."""
        pairs = graph[keys.COULOMB_PAIRS]
        num_atoms = charges.shape[0]
        if pairs.shape[1] == 0:
            return charges.new_zeros(num_atoms)
        distance = torch.linalg.vector_norm(edge_vectors(pos, cell, pairs, graph[keys.COULOMB_SHIFT], batch), dim=-1)
        kernel = torch.erf(distance / (2 * self.smearing)) if self.smearing > 0 else torch.ones_like(distance)
        screened = torch.erf(distance / self.split) * graph[keys.COULOMB_PERIODIC].to(distance.dtype)
        pair = gather(charges, pairs[0]) * gather(charges, pairs[1]) * (kernel - screened) / distance
        return 0.5 * (scatter_sum(pair, pairs[0], num_atoms) + scatter_sum(pair, pairs[1], num_atoms))

    def _periodic_energy(
        self, charges: Tensor, pos: Tensor, cell: Tensor, batch: Tensor, periodic: Tensor, graph: Data
    ) -> Tensor:
        """Reciprocal, self and background terms of the periodic frames, per atom, e^2/Å."""
        num_frames, b, a = cell.shape[0], self.split, 2 * self.smearing
        volume = torch.linalg.det(cell).abs()
        volume = torch.where(periodic, volume, torch.ones_like(volume))
        net = scatter_sum(charges, batch, num_frames)
        on_cell = gather(periodic.to(charges.dtype), batch)
        self_term = charges**2 / (math.sqrt(math.pi) * b)
        background = math.pi * (b**2 - a**2) * charges * gather(net / (2 * volume), batch)
        energy = -(self_term + background) * on_cell
        # reciprocal sum: one frame at a time, each with its own k-vectors ([K_f, N_f] phases)
        atom_counts = torch.bincount(batch, minlength=num_frames).tolist()
        k_counts = torch.bincount(graph[keys.KVECTOR_FRAME], minlength=num_frames).tolist()
        kvectors = graph[keys.KVECTORS].to(pos.dtype)
        parts, atom_start, k_start = [], 0, 0
        for frame in range(num_frames):
            atoms = slice(atom_start, atom_start + atom_counts[frame])
            if k_counts[frame] == 0:
                parts.append(charges.new_zeros(atom_counts[frame]))
            else:
                k = 2 * math.pi * kvectors[k_start : k_start + k_counts[frame]] @ torch.linalg.inv(cell[frame]).T
                parts.append(self._reciprocal(charges[atoms], pos[atoms], k, volume[frame]))
            atom_start, k_start = atom_start + atom_counts[frame], k_start + k_counts[frame]
        return energy + torch.cat(parts)

    def _reciprocal(self, charges: Tensor, pos: Tensor, k: Tensor, volume: Tensor) -> Tensor:
        """``q_i (4 pi / V) sum_k G(k) Re[exp(-i k.r_i) S(k)]`` over the half space of k, e^2/Å.

        Args:
            charges: [n] charges of one frame, e.
            pos: [n, 3] their positions, Å.
            k: [K, 3] wave vectors, 1/Å, one of each pair ``+-k``.
            volume: [] the cell volume, Å^3.
        """
        k_squared = (k * k).sum(-1)
        weight = torch.exp(-0.25 * self.split**2 * k_squared) / k_squared
        phase = pos @ k.T  # [n, K]
        cos, sin = torch.cos(phase), torch.sin(phase)
        real, imag = charges @ cos, charges @ sin  # the structure factor S(k), [K]
        return (4 * math.pi / volume) * charges * ((cos * real + sin * imag) @ weight)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(charges={self.charges!r}, smearing={self.smearing}, cutoff={self.cutoff}, "
            f"accuracy={self.accuracy:.0e}, split={self.split:.3f})"
        )


def _cat(parts: list[np.ndarray], empty: tuple[int, ...], dtype: type, device: torch.device, axis: int = 0) -> Tensor:
    """The arrays joined along ``axis`` as one tensor on ``device``; an empty one of shape ``empty`` when none."""
    array = np.concatenate(parts, axis=axis) if parts else np.zeros(empty, dtype=dtype)
    return torch.as_tensor(array.astype(dtype), device=device)
